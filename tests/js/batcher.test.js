import { Batcher, batchWindowFor } from "../../syncapp/static/syncapp/batcher.js";
import { FakeTime, settle } from "./fakes.js";
import { eq, ok, test } from "./harness.js";

function recorder() {
  /** @type {unknown[][]} */
  const batches = [];
  return { batches, send: (/** @type {unknown[]} */ items) => batches.push(items) };
}

test("Batcher: items added in the same tick go in one send", async () => {
  const { batches, send } = recorder();
  const batcher = new Batcher(send);
  batcher.add(1);
  batcher.add(2);
  batcher.add(3);
  eq(batches, [], "nothing is sent synchronously");
  eq(batcher.size, 3);
  await settle();
  eq(batches, [[1, 2, 3]]);
  eq(batcher.size, 0);
});

test("Batcher: items of separate ticks go in separate sends", async () => {
  const { batches, send } = recorder();
  const batcher = new Batcher(send);
  batcher.add("a");
  await settle();
  batcher.add("b");
  batcher.add("c");
  await settle();
  eq(batches, [["a"], ["b", "c"]]);
});

test("Batcher: the microtask fires before timers and after the current task", async () => {
  const { batches, send } = recorder();
  const batcher = new Batcher(send);
  batcher.add(1);
  await Promise.resolve();
  batcher.add(2);
  await settle();
  eq(batches.flat(), [1, 2], "every item is sent exactly once, in order");
});

test("Batcher: items within windowMs of the first one go together", () => {
  const time = new FakeTime();
  const { batches, send } = recorder();
  const batcher = new Batcher(send, { windowMs: 50, ...time });
  batcher.add(1);
  time.advance(30);
  batcher.add(2);
  time.advance(19);
  eq(batches, []);
  time.advance(1);
  eq(batches, [[1, 2]]);
  batcher.add(3);
  time.advance(49);
  batcher.add(4);
  time.advance(1);
  eq(batches, [[1, 2], [3, 4]]);
  eq(time.pendingTimers, 0);
});

test("Batcher: maxSize items are sent at once, the rest waits", async () => {
  const { batches, send } = recorder();
  const batcher = new Batcher(send, { maxSize: 3 });
  for (const item of [1, 2, 3, 4, 5, 6, 7]) batcher.add(item);
  eq(batches, [[1, 2, 3], [4, 5, 6]]);
  eq(batcher.size, 1);
  await settle();
  eq(batches, [[1, 2, 3], [4, 5, 6], [7]]);
});

test("Batcher: maxSize with a window cancels the timer of the full batch", () => {
  const time = new FakeTime();
  const { batches, send } = recorder();
  const batcher = new Batcher(send, { windowMs: 50, maxSize: 2, ...time });
  batcher.add(1);
  batcher.add(2);
  eq(batches, [[1, 2]]);
  eq(time.pendingTimers, 0);
  batcher.add(3);
  time.advance(50);
  eq(batches, [[1, 2], [3]]);
});

test("Batcher: flush() sends what waits now, and the scheduled send finds nothing", async () => {
  const { batches, send } = recorder();
  const batcher = new Batcher(send);
  eq(batcher.flush(), undefined, "nothing to send");
  batcher.add(1);
  batcher.add(2);
  eq(batcher.flush(), 1, "returns what send returned");
  eq(batches, [[1, 2]]);
  await settle();
  eq(batches, [[1, 2]]);
  batcher.add(3);
  await settle();
  eq(batches, [[1, 2], [3]]);
});

test("Batcher: flush() with a window clears its timer", () => {
  const time = new FakeTime();
  const { batches, send } = recorder();
  const batcher = new Batcher(send, { windowMs: 50, ...time });
  batcher.add(1);
  eq(time.pendingTimers, 1);
  batcher.flush();
  eq(time.pendingTimers, 0);
  eq(batches, [[1]]);
});

test("Batcher: items added while send runs start a new batch", async () => {
  /** @type {number[][]} */
  const batches = [];
  const batcher = new Batcher((/** @type {number[]} */ items) => {
    batches.push(items);
    if (items.includes(1)) batcher.add(99);
  });
  batcher.add(1);
  await settle();
  eq(batches, [[1], [99]]);
});

test("batchWindowFor: 0 normally", () => {
  eq(batchWindowFor(undefined), 0);
  eq(batchWindowFor(null), 0);
  eq(batchWindowFor({}), 0);
  eq(batchWindowFor({ type: "wifi", effectiveType: "4g", saveData: false }), 0);
  eq(batchWindowFor({ type: "ethernet" }), 0);
});

test("batchWindowFor: 50 ms for saveData, cellular and slow effective types", () => {
  eq(batchWindowFor({ saveData: true, effectiveType: "4g" }), 50);
  eq(batchWindowFor({ type: "cellular", effectiveType: "4g" }), 50);
  for (const effectiveType of ["slow-2g", "2g", "3g"]) {
    eq(batchWindowFor({ type: "wifi", effectiveType }), 50, effectiveType);
  }
});

test("batchWindowFor: takes navigator.connection where the browser has one", () => {
  const connection = /** @type {any} */ (globalThis.navigator)?.connection;
  ok([0, 50].includes(batchWindowFor(connection)));
});

test("Batcher: a window with the platform's own setTimeout sends (no Illegal invocation)", async () => {
  const { batches, send } = recorder();
  const batcher = new Batcher(send, { windowMs: 5 });
  batcher.add(1);
  batcher.add(2);
  eq(batches, []);
  await new Promise((resolve) => setTimeout(resolve, 50));
  eq(batches, [[1, 2]]);
  batcher.add(3);
  batcher.flush(); // clears the timer it set, with the platform's clearTimeout
  eq(batches, [[1, 2], [3]]);
});
