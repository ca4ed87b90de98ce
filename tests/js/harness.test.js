import { AssertionError, deepEqual, eq, ok, rejects, test, throws } from "./harness.js";

test("harness: deepEqual compares structure", () => {
  ok(deepEqual({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }));
  ok(!deepEqual({ a: 1 }, { a: 1, b: undefined }));
  ok(!deepEqual([1, 2], [2, 1]));
  ok(!deepEqual([1], { 0: 1 }));
  ok(deepEqual(new Map([["k", { v: 1 }]]), new Map([["k", { v: 1 }]])));
  ok(!deepEqual(new Map([["k", 1]]), new Map([["k", 2]])));
  ok(deepEqual(new Set([1, 2]), new Set([2, 1])));
  ok(deepEqual(Number.NaN, Number.NaN));
  ok(!deepEqual(null, {}));
  ok(!deepEqual(1, "1"));
});

test("harness: eq, ok and throws fail with AssertionError", async () => {
  throws(() => eq(1, 2), AssertionError);
  throws(() => eq({ a: 1 }, { a: 2 }, "ctx"), /ctx: expected \{"a":2\}, got \{"a":1\}/);
  throws(() => ok(0), AssertionError);
  throws(() => throws(() => {}), AssertionError);
  throws(() => throws(() => { throw new TypeError("x"); }, RangeError), AssertionError);
  throws(() => { throw new TypeError("boom"); }, "TypeError");
  await rejects(Promise.reject(new RangeError("r")), RangeError);
  await rejects(rejects(Promise.resolve(1)), AssertionError);
});
