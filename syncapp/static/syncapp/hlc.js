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
}
