/**
 * Fake time for the tests: a clock that moves only when told, and timers that fire when
 * it passes them, in order.
 */

export class FakeTime {
  /** @type {{id: number, at: number, fn: () => void}[]} */
  #timers = [];
  #nextId = 1;

  /** @param {number} [start] Milliseconds since the Unix epoch. */
  constructor(start = 1_764_000_000_000) {
    this.time = start;
    this.now = () => this.time;
    /**
     * @param {() => void} fn
     * @param {number} ms
     * @returns {number}
     */
    this.setTimer = (fn, ms) => {
      const id = this.#nextId++;
      this.#timers.push({ id, at: this.time + Math.max(0, ms), fn });
      return id;
    };
    /** @param {number} id */
    this.clearTimer = (id) => {
      this.#timers = this.#timers.filter((timer) => timer.id !== id);
    };
  }

  /** How many timers wait. */
  get pendingTimers() {
    return this.#timers.length;
  }

  /**
   * Move the clock forward, firing each timer due on the way at its own time.
   *
   * @param {number} ms
   */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      const due = this.#timers
        .filter((timer) => timer.at <= end)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.clearTimer(due.id);
      this.time = due.at;
      due.fn();
    }
    this.time = end;
  }
}

/** Let pending microtasks (and promise callbacks) run. */
export function settle() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
