import { classifyOp } from "../../syncapp/static/syncapp/positions.js";
import { eq, test } from "./harness.js";

const at = { epoch: "e1", seq: 10 };

test("classifyOp: the next seq of the same epoch applies", () => {
  eq(classifyOp(at, { epoch: "e1", seq: 11 }), "apply");
  eq(classifyOp({ epoch: "e1", seq: 0 }, { epoch: "e1", seq: 1 }), "apply");
});

test("classifyOp: a seq at or before the position is a duplicate", () => {
  eq(classifyOp(at, { epoch: "e1", seq: 10 }), "duplicate");
  eq(classifyOp(at, { epoch: "e1", seq: 3 }), "duplicate");
});

test("classifyOp: a seq past the next one is a gap", () => {
  eq(classifyOp(at, { epoch: "e1", seq: 12 }), "gap");
  eq(classifyOp(at, { epoch: "e1", seq: 1000 }), "gap");
});

test("classifyOp: without a position every op is a gap", () => {
  eq(classifyOp(null, { epoch: "e1", seq: 1 }), "gap");
  eq(classifyOp(undefined, { epoch: "e1", seq: 11 }), "gap");
});

test("classifyOp: another epoch is an epoch change, whatever its seq", () => {
  eq(classifyOp(at, { epoch: "e2", seq: 11 }), "epoch");
  eq(classifyOp(at, { epoch: "e2", seq: 1 }), "epoch");
  eq(classifyOp(at, { epoch: "e2", seq: 50 }), "epoch");
});
