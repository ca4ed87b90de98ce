/**
 * Latest-wins throttling, for presence cursors: the first call goes out at once, then at
 * most one call per interval, with the arguments of the latest call.
 *
 * @module throttle
 */

import { monotonicNow } from "./hlc.js";

/**
 * @typedef {object} ThrottleOptions
 * @property {() => number} [now=monotonicNow] a clock that does not jump when the system clock is set
 * @property {(fn: () => void, ms: number) => unknown} [setTimer=setTimeout]
 * @property {(timer: any) => void} [clearTimer=clearTimeout]
 */

/**
 * @template {unknown[]} A
 * @typedef {((...args: A) => void) & {flush: () => void, cancel: () => void,
 *   readonly pending: boolean}} Throttled
 * `flush()` makes a waiting call now; `cancel()` drops it (and the next call is a
 * leading one again); `pending` tells whether a call waits.
 */

/**
 * Wrap `fn` so that it runs at most once per `intervalMs`: a call when the interval has
 * passed runs at once (leading); calls within it replace each other and the latest runs
 * when the interval ends (trailing).
 *
 * @template {unknown[]} A
 * @param {(...args: A) => void} fn
 * @param {number} intervalMs
 * @param {ThrottleOptions} [options]
 * @returns {Throttled<A>}
 */
export function throttle(
  fn,
  intervalMs,
  { now = monotonicNow, setTimer = setTimeout, clearTimer = clearTimeout } = {},
) {
  let lastRun = -Infinity;
  /** @type {unknown} */
  let timer = null;
  /** @type {{self: unknown, args: A} | null} */
  let waiting = null;

  function stopTimer() {
    if (timer !== null) clearTimer(timer);
    timer = null;
  }

  /** @param {unknown} self @param {A} args */
  function run(self, args) {
    stopTimer();
    waiting = null;
    lastRun = now();
    fn.apply(self, args);
  }

  function runWaiting() {
    timer = null;
    if (waiting !== null) run(waiting.self, waiting.args);
  }

  /** @this {unknown} @param {A} args */
  function throttled(...args) {
    const remaining = lastRun + intervalMs - now();
    if (remaining <= 0) {
      run(this, args);
      return;
    }
    waiting = { self: this, args };
    if (timer === null) timer = setTimer(runWaiting, remaining);
  }

  throttled.flush = () => {
    if (waiting !== null) run(waiting.self, waiting.args);
  };
  throttled.cancel = () => {
    stopTimer();
    waiting = null;
    lastRun = -Infinity;
  };
  Object.defineProperty(throttled, "pending", { get: () => waiting !== null });
  return /** @type {Throttled<A>} */ (throttled);
}
