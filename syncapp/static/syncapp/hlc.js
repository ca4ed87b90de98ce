/**
 * The client's hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014),
 * sent with mutations of `lww` fields as `"<wall ms>:<counter>"`.
 *
 * Every stamp is greater than every stamp this clock issued or observed before, even
 * when the system clock stands still or goes back.
 *
 * @module hlc
 */

const WIRE_CLOCK = /^(\d{1,15}):(\d{1,9})$/;
const MAX_COUNTER = 999_999_999;
const MAX_WALL = 10 ** 15 - 1;

/**
 * Milliseconds on a clock that only moves forward, at the pace of real time: for
 * timeouts and intervals (heartbeats, throttling), which must not jump when the
 * system clock is set forward or back. `performance.now()` where there is one.
 *
 * @returns {number}
 */
export function monotonicNow() {
  return globalThis.performance?.now?.() ?? Date.now();
}

/**
 * A wire clock `"<wall ms>:<counter>"` as numbers, or `null` when it is not one.
 *
 * @param {unknown} text
 * @returns {[wall: number, counter: number] | null}
 */
export function parseClock(text) {
  const match = typeof text === "string" ? WIRE_CLOCK.exec(text) : null;
  return match ? [Number(match[1]), Number(match[2])] : null;
}

/**
 * Order two wire clocks: negative, zero or positive, like a sort comparator.
 *
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function compareClocks(a, b) {
  const [wallA, counterA] = parseClock(a) ?? [-1, -1];
  const [wallB, counterB] = parseClock(b) ?? [-1, -1];
  return wallA - wallB || counterA - counterB;
}

/** A hybrid logical clock. */
export class Clock {
  #now;
  #wall = 0;
  #counter = 0;

  /**
   * @param {{now?: () => number}} [options] `now`: the physical clock in milliseconds
   *   since the Unix epoch (tests inject a frozen one).
   */
  constructor({ now = Date.now } = {}) {
    this.#now = now;
  }

  /**
   * A new stamp, strictly greater than every one issued or observed so far.
   *
   * @returns {string} `"<wall ms>:<counter>"`.
   */
  tick() {
    const physical = Math.floor(this.#now());
    if (physical > this.#wall) {
      this.#wall = physical;
      this.#counter = 0;
    } else if (this.#counter < MAX_COUNTER) {
      this.#counter += 1;
    } else {
      // The counter has 9 digits on the wire: borrow the next millisecond instead.
      this.#wall += 1;
      this.#counter = 0;
    }
    return `${this.#wall}:${this.#counter}`;
  }

  /**
   * Take in a clock from elsewhere (another tab, the server), so that later stamps
   * order after it. Anything that is not a wire clock is ignored.
   *
   * @param {unknown} remote
   * @returns {boolean} Whether `remote` was a valid clock.
   */
  observe(remote) {
    const parsed = parseClock(remote);
    if (parsed === null) return false;
    const [wall, counter] = parsed;
    if (wall > this.#wall || (wall === this.#wall && counter > this.#counter)) {
      this.#wall = wall;
      this.#counter = counter;
    }
    return true;
  }

  /**
   * Take in a wall time from elsewhere (the server's `ts` of an op, as milliseconds or
   * an ISO 8601 string), so that later stamps order after what that op did, even when
   * this machine's clock is behind: the time counts as the last stamp of its
   * millisecond, so the next stamp is past every stamp of that millisecond. Anything
   * else is ignored.
   *
   * @param {unknown} time
   * @returns {boolean} Whether `time` was a valid time.
   */
  observeTime(time) {
    const ms = typeof time === "string" ? Date.parse(time) : time;
    if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0 || ms > MAX_WALL) return false;
    return this.observe(`${Math.floor(ms)}:${MAX_COUNTER}`);
  }
}
