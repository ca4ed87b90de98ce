import { uuid } from "../../syncapp/static/syncapp/ids.js";
import { eq, ok, test, throws } from "./harness.js";

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("uuid: version 4 UUIDs, all different", () => {
  const ids = new Set(Array.from({ length: 200 }, () => uuid()));
  eq(ids.size, 200);
  for (const id of ids) ok(V4.test(id), id);
});

test("uuid: uses crypto.randomUUID when there is one", () => {
  eq(uuid({ randomUUID: () => "from-randomUUID", getRandomValues: (a) => a }), "from-randomUUID");
});

test("uuid: falls back to crypto.getRandomValues, setting version and variant bits", () => {
  const ones = { getRandomValues: (/** @type {Uint8Array} */ bytes) => bytes.fill(0xff) };
  eq(uuid(ones), "ffffffff-ffff-4fff-bfff-ffffffffffff");
  const zeros = { getRandomValues: (/** @type {Uint8Array} */ bytes) => bytes.fill(0) };
  eq(uuid(zeros), "00000000-0000-4000-8000-000000000000");
  const real = { getRandomValues: (/** @type {Uint8Array} */ b) => crypto.getRandomValues(b) };
  ok(V4.test(uuid(real)));
});

test("uuid: says so when there is no randomness at all", () => {
  throws(() => uuid({}), /getRandomValues/);
  throws(() => uuid(/** @type {any} */ (null)), /getRandomValues/);
});
