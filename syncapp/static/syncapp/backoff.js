/**
 * How long to wait before the next attempt: exponential backoff with full jitter
 * (Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015), and
 * the server's `Retry-After` when it sends one.
 *
 * @module backoff
 */

/**
 * @typedef {object} BackoffOptions
 * @property {number} [baseMs=500] The window of the first retry, in milliseconds.
 * @property {number} [capMs=30000] The window never grows past this.
 * @property {() => number} [random=Math.random] A source of numbers in `[0, 1)`.
 */

/**
 * The delay before retry number `attempt` (0 for the first): a uniform draw from
 * `[0, min(capMs, baseMs * 2 ** attempt))`.
 *
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @returns {number} Milliseconds.
 */
export function backoffDelay(attempt, { baseMs = 500, capMs = 30000, random = Math.random } = {}) {
  // 2 ** 1024 is Infinity, which Math.min turns into capMs: no overflow to guard against.
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt));
  return random() * ceiling;
}

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const TIME = String.raw`(\d{2}):(\d{2}):(\d{2})`;
const MONTH = String.raw`([a-z]{3})`;

// The three HTTP-date forms a recipient must accept (RFC 9110, section 5.6.7).
const IMF_FIXDATE = new RegExp(String.raw`^[a-z]{3}, (\d{2}) ${MONTH} (\d{4}) ${TIME} GMT$`, "i");
const RFC_850 = new RegExp(String.raw`^[a-z]{6,9}, (\d{2})-${MONTH}-(\d{2}) ${TIME} GMT$`, "i");
const ASCTIME = new RegExp(String.raw`^[a-z]{3} ${MONTH} ( \d|\d{2}) ${TIME} (\d{4})$`, "i");

/**
 * A two-digit RFC 850 year as a full year: one more than 50 years in the future is in
 * the past century.
 *
 * @param {number} twoDigits
 * @param {number} now
 * @returns {number}
 */
function fullYear(twoDigits, now) {
  const thisYear = new Date(now).getUTCFullYear();
  const year = Math.floor(thisYear / 100) * 100 + twoDigits;
  return year > thisYear + 50 ? year - 100 : year;
}

/**
 * An HTTP-date in milliseconds since the Unix epoch, or `null`.
 *
 * @param {string} text
 * @param {number} now
 * @returns {number | null}
 */
function parseHttpDate(text, now) {
  let m;
  let parts; // [year, month name, day, hour, minute, second]
  if ((m = IMF_FIXDATE.exec(text))) {
    parts = [m[3], m[2], m[1], m[4], m[5], m[6]];
  } else if ((m = RFC_850.exec(text))) {
    parts = [fullYear(Number(m[3]), now), m[2], m[1], m[4], m[5], m[6]];
  } else if ((m = ASCTIME.exec(text))) {
    parts = [m[6], m[1], m[2], m[3], m[4], m[5]];
  } else {
    return null;
  }
  const [yearText, monthName, ...rest] = parts;
  const month = MONTHS.indexOf(String(monthName).toLowerCase());
  const [year, day, hour, minute, second] = [yearText, ...rest].map(Number);
  if (month < 0 || hour > 23 || minute > 59 || second > 60) return null;
  // A leap second (60) counts as the last second of its minute.
  const time = Date.UTC(year, month, day, hour, minute, Math.min(second, 59));
  // Date.UTC rolls 31 Feb over into March: refuse days that do not exist.
  return new Date(time).getUTCDate() === day ? time : null;
}

/**
 * A `Retry-After` header value (delay seconds or an HTTP-date) in milliseconds from
 * `now`; `null` when absent or unparsable, never negative.
 *
 * @param {string | number | null | undefined} value
 * @param {number} [now=Date.now()] Milliseconds since the Unix epoch.
 * @returns {number | null}
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (typeof value === "number") {
    return Number.isFinite(value) && value >= 0 ? value * 1000 : null;
  }
  if (typeof value !== "string") return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const time = parseHttpDate(text, now);
  return time === null ? null : Math.max(0, time - now);
}

/**
 * @typedef {BackoffOptions & {maxAttempts?: number | null}} BackoffPolicy
 * `maxAttempts` (default 10) is how many delays `next()` gives before it gives up;
 * `null` or `Infinity` never gives up.
 */

/** Consecutive attempts of one thing (a reconnect, a retry): their delays and their count. */
export class Backoff {
  #options;
  #maxAttempts;
  #attempts = 0;

  /** @param {BackoffPolicy} [policy] */
  constructor({ baseMs = 500, capMs = 30000, maxAttempts = 10, random = Math.random } = {}) {
    this.#options = { baseMs, capMs, random };
    this.#maxAttempts = maxAttempts ?? Infinity;
  }

  /** How many delays were handed out since the last `reset()`. */
  get attempts() {
    return this.#attempts;
  }

  /**
   * The delay before the next attempt, counting that attempt; `null` once
   * `maxAttempts` attempts were made.
   *
   * @param {number | null} [retryAfterMs=null] The server's wish: the delay is at least this.
   * @returns {number | null} Milliseconds.
   */
  next(retryAfterMs = null) {
    if (this.#attempts >= this.#maxAttempts) return null;
    const delay = backoffDelay(this.#attempts, this.#options);
    this.#attempts += 1;
    return Math.max(delay, retryAfterMs ?? 0);
  }

  /** Start over: after a success, the next failure waits the shortest window again. */
  reset() {
    this.#attempts = 0;
  }
}
