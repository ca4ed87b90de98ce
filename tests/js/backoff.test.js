import { Backoff, backoffDelay, parseRetryAfter } from "../../syncapp/static/syncapp/backoff.js";
import { eq, ok, test } from "./harness.js";

const ALMOST_ONE = 0.999;
const NOW = Date.UTC(2026, 10, 24, 15, 4, 5); // Tue, 24 Nov 2026 15:04:05 GMT

test("backoffDelay: full jitter spans [0, base * 2**attempt)", () => {
  eq(backoffDelay(0, { random: () => 0 }), 0);
  eq(backoffDelay(0, { random: () => ALMOST_ONE }), 500 * ALMOST_ONE);
  eq(backoffDelay(3, { random: () => ALMOST_ONE }), 4000 * ALMOST_ONE);
  eq(backoffDelay(2, { baseMs: 100, random: () => 0.5 }), 200);
});

test("backoffDelay: the window stops growing at capMs, even for huge attempts", () => {
  eq(backoffDelay(6, { random: () => ALMOST_ONE }), 30000 * ALMOST_ONE);
  eq(backoffDelay(5000, { random: () => ALMOST_ONE }), 30000 * ALMOST_ONE);
  eq(backoffDelay(4, { baseMs: 100, capMs: 1000, random: () => ALMOST_ONE }), 1000 * ALMOST_ONE);
});

test("backoffDelay: uses Math.random by default and stays in bounds", () => {
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const delay = backoffDelay(attempt);
    ok(delay >= 0 && delay < Math.min(30000, 500 * 2 ** attempt), `attempt ${attempt}: ${delay}`);
  }
});

test("Backoff: next() grows per attempt and counts attempts", () => {
  const backoff = new Backoff({ random: () => ALMOST_ONE });
  eq(backoff.attempts, 0);
  eq(backoff.next(), 500 * ALMOST_ONE);
  eq(backoff.next(), 1000 * ALMOST_ONE);
  eq(backoff.next(), 2000 * ALMOST_ONE);
  eq(backoff.attempts, 3);
});

test("Backoff: null once maxAttempts attempts were made; reset() starts over", () => {
  const backoff = new Backoff({ maxAttempts: 2, random: () => 0 });
  eq(backoff.next(), 0);
  eq(backoff.next(), 0);
  eq(backoff.next(), null);
  eq(backoff.next(), null);
  eq(backoff.attempts, 2);
  backoff.reset();
  eq(backoff.attempts, 0);
  eq(backoff.next(), 0);
});

test("Backoff: maxAttempts defaults to 10; null means no limit", () => {
  const limited = new Backoff({ random: () => 0 });
  for (let i = 0; i < 10; i += 1) eq(limited.next(), 0);
  eq(limited.next(), null);
  const unlimited = new Backoff({ maxAttempts: null, random: () => 0 });
  for (let i = 0; i < 50; i += 1) eq(unlimited.next(), 0);
});

test("Backoff: the delay is at least the server's Retry-After", () => {
  const backoff = new Backoff({ random: () => 0.5 });
  eq(backoff.next(5000), 5000);
  eq(backoff.next(10), 500, "the jittered delay wins when it is longer");
  eq(backoff.next(null), 1000);
  eq(backoff.attempts, 3, "a Retry-After attempt counts too");
});

test("parseRetryAfter: delay seconds", () => {
  eq(parseRetryAfter("0", NOW), 0);
  eq(parseRetryAfter("120", NOW), 120000);
  eq(parseRetryAfter(" 3 ", NOW), 3000);
  eq(parseRetryAfter(7, NOW), 7000);
});

test("parseRetryAfter: HTTP dates in all three forms, relative to now", () => {
  eq(parseRetryAfter("Tue, 24 Nov 2026 15:04:35 GMT", NOW), 30000);
  eq(parseRetryAfter("Tuesday, 24-Nov-26 15:05:05 GMT", NOW), 60000);
  eq(parseRetryAfter("Tue Nov 24 15:04:06 2026", NOW), 1000);
  eq(parseRetryAfter("Tue Nov  3 00:00:00 2026", Date.UTC(2026, 10, 2)), 86400000);
});

test("parseRetryAfter: a date in the past is 0, never negative", () => {
  eq(parseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", NOW), 0);
  eq(parseRetryAfter("Tue, 24 Nov 2026 15:04:04 GMT", NOW), 0);
});

test("parseRetryAfter: absent or garbage is null", () => {
  for (const value of [
    null,
    undefined,
    "",
    "   ",
    "soon",
    "-5",
    "1.5",
    "12abc",
    "Tue, 31 Feb 2026 15:04:05 GMT",
    "Tue, 24 Nov 2026 25:04:05 GMT",
    "Tue, 24 Xyz 2026 15:04:05 GMT",
    "2026-11-24T15:04:05Z",
    -3,
    Number.NaN,
    Infinity,
    {},
  ]) {
    eq(parseRetryAfter(/** @type {any} */ (value), NOW), null, show(value));
  }
});

test("parseRetryAfter: now defaults to the current time", () => {
  const inAMinute = new Date(Date.now() + 60000).toUTCString();
  const delay = parseRetryAfter(inAMinute);
  ok(delay !== null && delay > 58000 && delay <= 60000, `got ${delay}`);
});

/** @param {unknown} value */
function show(value) {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}
