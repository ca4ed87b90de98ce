import { throttle } from "../../syncapp/static/syncapp/throttle.js";
import { FakeTime } from "./fakes.js";
import { eq, test } from "./harness.js";

function setup(intervalMs = 100) {
  const time = new FakeTime();
  /** @type {unknown[][]} */
  const calls = [];
  const throttled = throttle((...args) => calls.push(args), intervalMs, time);
  return { time, calls, throttled };
}

test("throttle: the first call runs at once (leading)", () => {
  const { calls, throttled } = setup();
  throttled(1);
  eq(calls, [[1]]);
  eq(throttled.pending, false);
});

test("throttle: calls within the interval collapse into one trailing call, latest wins", () => {
  const { time, calls, throttled } = setup();
  throttled("a");
  time.advance(10);
  throttled("b");
  time.advance(10);
  throttled("c", "extra");
  eq(calls, [["a"]]);
  eq(throttled.pending, true);
  time.advance(79);
  eq(calls, [["a"]], "not before the interval ends");
  time.advance(1);
  eq(calls, [["a"], ["c", "extra"]]);
  eq(throttled.pending, false);
});

test("throttle: at most one call per interval under a steady stream of calls", () => {
  const time = new FakeTime(0);
  /** @type {number[][]} */
  const calls = [];
  const record = (/** @type {number} */ arg) => calls.push([time.now(), arg]);
  const throttled = throttle(record, 100, time);
  for (let t = 0; t < 1000; t += 10) {
    throttled(t);
    time.advance(10);
  }
  // At 0 the leading call; then at each 100 ms the latest argument, made 10 ms before.
  eq(calls, Array.from({ length: 11 }, (_, i) => [i * 100, i === 0 ? 0 : i * 100 - 10]));
});

test("throttle: a call after a quiet interval is a leading call again", () => {
  const { time, calls, throttled } = setup();
  throttled(1);
  time.advance(500);
  throttled(2);
  eq(calls, [[1], [2]]);
});

test("throttle: the interval counts from the trailing call", () => {
  const { time, calls, throttled } = setup();
  throttled(1);
  throttled(2);
  time.advance(100);
  eq(calls, [[1], [2]]);
  throttled(3);
  eq(calls, [[1], [2]], "the trailing call at 100 opened a new interval");
  time.advance(100);
  eq(calls, [[1], [2], [3]]);
});

test("throttle: flush() runs a waiting call now and starts a new interval", () => {
  const { time, calls, throttled } = setup();
  throttled(1);
  throttled(2);
  throttled.flush();
  eq(calls, [[1], [2]]);
  eq(time.pendingTimers, 0);
  throttled.flush();
  eq(calls, [[1], [2]], "nothing waits: flush does nothing");
  throttled(3);
  eq(calls, [[1], [2]]);
  time.advance(100);
  eq(calls, [[1], [2], [3]]);
});

test("throttle: cancel() drops the waiting call", () => {
  const { time, calls, throttled } = setup();
  throttled(1);
  throttled(2);
  throttled.cancel();
  time.advance(1000);
  eq(calls, [[1]]);
  eq(time.pendingTimers, 0);
  throttled(3);
  eq(calls, [[1], [3]], "after cancel the next call is leading");
});

test("throttle: keeps the `this` of the latest call", () => {
  const time = new FakeTime();
  /** @type {unknown[]} */
  const seen = [];
  const throttled = throttle(
    function () {
      seen.push(this.name);
    },
    100,
    time,
  );
  const a = { name: "a", throttled };
  const b = { name: "b", throttled };
  a.throttled();
  a.throttled();
  b.throttled();
  time.advance(100);
  eq(seen, ["a", "b"]);
});

test("throttle: works with the real clock and timers by default", async () => {
  /** @type {number[]} */
  const calls = [];
  const throttled = throttle((/** @type {number} */ n) => calls.push(n), 20);
  throttled(1);
  throttled(2);
  throttled(3);
  eq(calls, [1]);
  await new Promise((resolve) => setTimeout(resolve, 60));
  eq(calls, [1, 3]);
});
