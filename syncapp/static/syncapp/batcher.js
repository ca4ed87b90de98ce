/**
 * Group what is queued close together into one send: mutations made in one tick go
 * out in one `mutate` frame, or within a short window on slow connections.
 *
 * @module batcher
 */

/** The window on slow or metered connections, in milliseconds. */
export const SLOW_CONNECTION_WINDOW_MS = 50;

const SLOW_EFFECTIVE_TYPES = new Set(["slow-2g", "2g", "3g"]);

/**
 * @typedef {object} NetworkInformationLike
 * The parts of `navigator.connection` (the Network Information API) that matter here.
 * @property {string} [type] e.g. `"wifi"`, `"cellular"`.
 * @property {string} [effectiveType] `"slow-2g"`, `"2g"`, `"3g"` or `"4g"`.
 * @property {boolean} [saveData] The user asked for reduced data use.
 */

/**
 * The batching window for a connection: 0 (one tick) normally, 50 ms when the user
 * saves data, on cellular networks, and on connections slower than 4g.
 *
 * @param {NetworkInformationLike | null | undefined} connection
 * @returns {number} Milliseconds.
 */
export function batchWindowFor(connection) {
  if (!connection) return 0;
  const slow =
    connection.saveData === true ||
    connection.type === "cellular" ||
    SLOW_EFFECTIVE_TYPES.has(connection.effectiveType ?? "");
  return slow ? SLOW_CONNECTION_WINDOW_MS : 0;
}

/**
 * @typedef {object} BatcherOptions
 * @property {number} [windowMs=0] 0: send at the end of the tick (a microtask); else
 *   this many milliseconds after the first item of a batch.
 * @property {number} [maxSize=100] A batch this large goes at once.
 * @property {(fn: () => void, ms: number) => unknown} [setTimer=setTimeout]
 * @property {(timer: any) => void} [clearTimer=clearTimeout]
 */

/**
 * Collects items and hands them to `send(items)` in batches. What `send` throws or
 * rejects with is the caller's to handle: a batch sent on a timer has nobody to catch it.
 *
 * @template T
 */
export class Batcher {
  #send;
  #windowMs;
  #maxSize;
  #setTimer;
  #clearTimer;
  /** @type {T[]} */
  #items = [];
  /** @type {unknown} A timer, or for a microtask the token that it is still wanted. */
  #scheduled = null;

  /**
   * @param {(items: T[]) => unknown} send
   * @param {BatcherOptions} [options]
   */
  constructor(
    send,
    { windowMs = 0, maxSize = 100, setTimer = setTimeout, clearTimer = clearTimeout } = {},
  ) {
    this.#send = send;
    this.#windowMs = windowMs;
    this.#maxSize = Math.max(1, maxSize);
    // Called as plain functions: a browser's setTimeout called as a method of this object
    // throws "Illegal invocation", which silently stopped every batch with a window.
    this.#setTimer = (fn, ms) => setTimer(fn, ms);
    this.#clearTimer = (timer) => clearTimer(timer);
  }

  /** How many items wait. */
  get size() {
    return this.#items.length;
  }

  /**
   * Queue `item`; a full batch is sent at once.
   *
   * @param {T} item
   */
  add(item) {
    this.#items.push(item);
    if (this.#items.length >= this.#maxSize) {
      this.flush();
    } else if (this.#scheduled === null) {
      this.#schedule();
    }
  }

  /**
   * Send what waits now, if anything.
   *
   * @returns {unknown} What `send` returned, or `undefined` when nothing waited.
   */
  flush() {
    this.#unschedule();
    if (this.#items.length === 0) return undefined;
    const items = this.#items;
    this.#items = [];
    return this.#send(items);
  }

  #schedule() {
    if (this.#windowMs > 0) {
      this.#scheduled = this.#setTimer(() => {
        this.#scheduled = null;
        this.flush();
      }, this.#windowMs);
      return;
    }
    // A microtask cannot be cancelled: it checks that it is still the scheduled one.
    const token = {};
    this.#scheduled = token;
    queueMicrotask(() => {
      if (this.#scheduled === token) this.flush();
    });
  }

  #unschedule() {
    if (this.#scheduled !== null && this.#windowMs > 0) this.#clearTimer(this.#scheduled);
    this.#scheduled = null;
  }
}
