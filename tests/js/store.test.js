import { StreamState, objectKey } from "../../syncapp/static/syncapp/store.js";
import { eq, ok, test } from "./harness.js";

const STREAM = "todos.list:1";
const TODO = "todos.todo";

/** @param {number} pk @param {number} version @param {object} fields */
function todo(pk, version, fields) {
  return { model: TODO, pk, version, fields };
}

/** An op of epoch e1. */
function op(seq, kind, pk, version, fields = {}, mutation = null) {
  return { stream: STREAM, epoch: "e1", seq, model: TODO, pk, op: kind, fields, version, mutation };
}

let ids = 0;
function mutation(kind, pk, fields = {}, extra = {}) {
  ids += 1;
  return { id: `m${ids}`, stream: STREAM, model: TODO, pk, op: kind, fields, ...extra };
}

/** A state at e1:2 with todos 1 (v1) and 2 (v3). */
function loaded() {
  const state = new StreamState(STREAM);
  state.loadSnapshot({
    epoch: "e1",
    seq: 2,
    objects: [todo(1, 1, { title: "milk", done: false }), todo(2, 3, { title: "eggs", likes: 4 })],
  });
  return state;
}

/** The view as {pk: fields}, for short assertions. */
function fieldsByPk(state) {
  return Object.fromEntries(state.objects(TODO).map((o) => [o.pk, o.fields]));
}

test("objectKey: model and JSON pk, so 1 and '1' differ", () => {
  eq(objectKey(TODO, 1), 'todos.todo|1');
  eq(objectKey(TODO, "1"), 'todos.todo|"1"');
});

test("StreamState: starts without a position or objects", () => {
  const state = new StreamState(STREAM);
  eq([state.stream, state.epoch, state.seq, state.position], [STREAM, null, 0, null]);
  eq(state.base.size, 0);
  eq(state.pending, []);
  eq(state.view().size, 0);
});

test("loadSnapshot: sets base and position; view shows the objects, not pending", () => {
  const state = loaded();
  eq(state.position, { epoch: "e1", seq: 2 });
  eq(state.base.get(objectKey(TODO, 1)), todo(1, 1, { title: "milk", done: false }));
  eq(state.get(TODO, 2), { ...todo(2, 3, { title: "eggs", likes: 4 }), pending: false });
  eq(state.get(TODO, 99), undefined);
});

test("loadSnapshot: copies the objects it is given", () => {
  const objects = [todo(1, 1, { title: "milk" })];
  const state = new StreamState(STREAM);
  state.loadSnapshot({ epoch: "e1", seq: 1, objects });
  objects[0].fields.title = "changed outside";
  eq(state.get(TODO, 1).fields.title, "milk");
});

test("loadSnapshot: replaces base and position and keeps pending mutations", () => {
  const state = loaded();
  const edit = mutation("update", 3, { title: "new" });
  state.addPending(edit);
  state.loadSnapshot({ epoch: "e2", seq: 7, objects: [todo(3, 1, { title: "old" })] });
  eq(state.position, { epoch: "e2", seq: 7 });
  eq([...state.base.keys()], [objectKey(TODO, 3)]);
  eq(state.pending, [edit]);
  eq(state.get(TODO, 3), { ...todo(3, 1, { title: "new" }), pending: true });
});

test("applyOps: create, update and delete, in order", () => {
  const state = loaded();
  const ops = [
    op(3, "create", 5, 1, { title: "bread", done: false }),
    op(4, "update", 1, 2, { done: true }),
    op(5, "delete", 2, 4),
  ];
  eq(state.applyOps(ops), { applied: ops, stop: null });
  eq(state.position, { epoch: "e1", seq: 5 });
  eq(state.base.get(objectKey(TODO, 1)), todo(1, 2, { title: "milk", done: true }));
  eq(state.base.get(objectKey(TODO, 5)), todo(5, 1, { title: "bread", done: false }));
  eq(state.base.has(objectKey(TODO, 2)), false);
});

test("applyOps: duplicates are skipped, the rest applies", () => {
  const state = loaded();
  const result = state.applyOps([
    op(1, "update", 1, 9, { title: "replayed" }),
    op(2, "update", 1, 9, { title: "replayed" }),
    op(3, "update", 1, 2, { title: "oat milk" }),
  ]);
  eq(result.applied.map((o) => o.seq), [3]);
  eq(result.stop, null);
  eq(state.base.get(objectKey(TODO, 1)), todo(1, 2, { title: "oat milk", done: false }));
  eq(state.seq, 3);
});

test("applyOps: stops at a gap and keeps what came before it", () => {
  const state = loaded();
  const result = state.applyOps([
    op(3, "update", 1, 2, { done: true }),
    op(5, "update", 1, 4, { title: "after the gap" }),
    op(6, "update", 1, 5, { title: "later" }),
  ]);
  eq(result.applied.map((o) => o.seq), [3]);
  eq(result.stop, "gap");
  eq(state.seq, 3);
  eq(state.get(TODO, 1).fields, { title: "milk", done: true });
});

test("applyOps: stops at another epoch", () => {
  const state = loaded();
  const result = state.applyOps([{ ...op(3, "update", 1, 2, { done: true }), epoch: "e2" }]);
  eq(result, { applied: [], stop: "epoch" });
  eq(state.position, { epoch: "e1", seq: 2 });
  eq(state.get(TODO, 1).fields.done, false);
});

test("applyOps: before the first snapshot everything is a gap", () => {
  const state = new StreamState(STREAM);
  eq(state.applyOps([op(1, "create", 1, 1, { title: "x" })]), { applied: [], stop: "gap" });
  eq(state.base.size, 0);
});

test("applyOps: a create of an existing object replaces its fields", () => {
  const state = loaded();
  state.applyOps([op(3, "create", 1, 2, { title: "recreated" })]);
  eq(state.base.get(objectKey(TODO, 1)), todo(1, 2, { title: "recreated" }));
});

test("applyOps: an update of a missing object is ignored, the position still moves", () => {
  const state = loaded();
  const result = state.applyOps([op(3, "update", 42, 2, { title: "ghost" })]);
  eq(result.applied.length, 1);
  eq(state.seq, 3);
  eq(state.base.has(objectKey(TODO, 42)), false);
});

test("applyOps: an op older than the version in base does not undo it", () => {
  const state = loaded();
  const mine = mutation("update", 1, { title: "mine" });
  state.addPending(mine);
  // The result (v3) arrives before the ops of v2 (someone else's) and v3 (mine).
  state.resolve(mine.id, {
    id: mine.id,
    status: "applied",
    seq: 4,
    version: 3,
    object: todo(1, 3, { title: "mine", done: true }),
    error: null,
  });
  state.applyOps([op(3, "update", 1, 2, { title: "theirs", done: true })]);
  eq(state.base.get(objectKey(TODO, 1)), todo(1, 3, { title: "mine", done: true }));
  eq(state.seq, 3);
  state.applyOps([op(4, "update", 1, 3, { title: "mine" }, mine.id)]);
  eq(state.base.get(objectKey(TODO, 1)), todo(1, 3, { title: "mine", done: true }));
  eq(state.seq, 4);
});

test("applyOps: ops carry values, so a {delta} shaped value is kept as is", () => {
  const state = loaded();
  state.applyOps([op(3, "update", 2, 4, { likes: 6, meta: { delta: 1 } })]);
  eq(state.base.get(objectKey(TODO, 2)).fields, { title: "eggs", likes: 6, meta: { delta: 1 } });
});

test("view: pending mutations replay over base, in order, marked pending", () => {
  const state = loaded();
  state.addPending(mutation("update", 1, { title: "oat milk" }));
  state.addPending(mutation("create", 7, { title: "jam", done: false }));
  state.addPending(mutation("update", 7, { done: true }));
  state.addPending(mutation("delete", 2));
  const view = state.view();
  eq([...view.keys()].sort(), [objectKey(TODO, 1), objectKey(TODO, 7)]);
  eq(view.get(objectKey(TODO, 1)), {
    ...todo(1, 1, { title: "oat milk", done: false }),
    pending: true,
  });
  eq(view.get(objectKey(TODO, 7)), {
    model: TODO,
    pk: 7,
    version: null,
    fields: { title: "jam", done: true },
    pending: true,
  });
  eq(state.base.get(objectKey(TODO, 1)).fields.title, "milk", "base is untouched");
});

test("view: objects no pending mutation touches are not pending", () => {
  const state = loaded();
  state.addPending(mutation("update", 1, { done: true }));
  eq(state.get(TODO, 1).pending, true);
  eq(state.get(TODO, 2).pending, false);
});

test("view: a pending create of an existing object merges its fields over it", () => {
  const state = loaded();
  state.addPending(mutation("create", 1, { title: "again" }));
  eq(state.get(TODO, 1), { ...todo(1, 1, { title: "again", done: false }), pending: true });
});

test("view: a pending update of an object not in view is ignored", () => {
  const state = loaded();
  state.addPending(mutation("update", 42, { title: "ghost" }));
  state.addPending(mutation("delete", 1));
  state.addPending(mutation("update", 1, { title: "after delete" }));
  eq(state.get(TODO, 42), undefined);
  eq(state.get(TODO, 1), undefined);
  eq(state.view().size, 1);
});

test("view: counter deltas add to the current number", () => {
  const state = loaded();
  state.addPending(mutation("update", 2, { likes: { delta: 2 } }));
  state.addPending(mutation("update", 2, { likes: { delta: -1 } }));
  state.addPending(mutation("update", 1, { likes: { delta: 5 } }));
  state.addPending(mutation("create", 9, { likes: { delta: 3 } }));
  eq(state.get(TODO, 2).fields.likes, 5);
  eq(state.get(TODO, 1).fields.likes, 5, "a missing counter counts from 0");
  eq(state.get(TODO, 9).fields.likes, 3);
});

test("view: only {delta: <integer>} is a delta; other objects are plain values", () => {
  const state = loaded();
  state.addPending(mutation("update", 2, { meta: { delta: 1, other: 2 }, note: { delta: "x" } }));
  eq(state.get(TODO, 2).fields.meta, { delta: 1, other: 2 });
  eq(state.get(TODO, 2).fields.note, { delta: "x" });
});

test("view: pending deltas rebase over new ops instead of overwriting them", () => {
  const state = loaded();
  state.addPending(mutation("update", 2, { likes: { delta: 1 } }));
  eq(state.get(TODO, 2).fields.likes, 5);
  state.applyOps([op(3, "update", 2, 4, { likes: 10 })]);
  eq(state.get(TODO, 2).fields.likes, 11);
  eq(state.get(TODO, 2).version, 4);
});

test("view: pending updates replay over new ops (rebase)", () => {
  const state = loaded();
  state.addPending(mutation("update", 1, { title: "mine" }));
  state.applyOps([op(3, "update", 1, 2, { title: "theirs", done: true })]);
  eq(state.get(TODO, 1), { ...todo(1, 2, { title: "mine", done: true }), pending: true });
  eq(state.base.get(objectKey(TODO, 1)).fields.title, "theirs");
});

test("applyOps: an op carrying a pending mutation's id confirms it", () => {
  const state = loaded();
  const mine = mutation("update", 1, { title: "mine" });
  const other = mutation("update", 2, { title: "other" });
  state.addPending(mine);
  state.addPending(other);
  state.applyOps([op(3, "update", 1, 2, { title: "mine" }, mine.id)]);
  eq(state.pending, [other]);
  eq(state.get(TODO, 1), { ...todo(1, 2, { title: "mine", done: false }), pending: false });
});

test("applyOps: a duplicate op confirms its mutation too (base has it already)", () => {
  const state = loaded();
  const mine = mutation("update", 1, { title: "x" });
  state.addPending(mine);
  state.applyOps([op(2, "update", 1, 1, { title: "x" }, mine.id)]);
  eq(state.pending, []);
});

test("applyOps: ops past a gap do not confirm their mutations", () => {
  const state = loaded();
  const mine = mutation("update", 1, { title: "x" });
  state.addPending(mine);
  eq(state.applyOps([op(9, "update", 1, 2, { title: "x" }, mine.id)]).stop, "gap");
  eq(state.pending, [mine]);
});

test("addPending: the same mutation id twice is queued once", () => {
  const state = loaded();
  const mine = mutation("update", 2, { likes: { delta: 1 } });
  state.addPending(mine);
  state.addPending({ ...mine });
  eq(state.pending.length, 1);
  eq(state.get(TODO, 2).fields.likes, 5);
});

test("resolve: applied takes the server's object and drops the mutation", () => {
  const state = loaded();
  const mine = mutation("update", 1, { title: "Oat milk " });
  state.addPending(mine);
  const object = todo(1, 2, { title: "Oat milk", done: false });
  const returned = state.resolve(mine.id, {
    id: mine.id,
    status: "applied",
    seq: 3,
    version: 2,
    object,
    error: null,
  });
  eq(returned, mine);
  eq(state.pending, []);
  eq(state.get(TODO, 1), { ...object, pending: false });
  object.fields.title = "changed outside";
  eq(state.get(TODO, 1).fields.title, "Oat milk", "base holds a copy");
});

test("resolve: a conflict takes the server's object, dropping the local change", () => {
  const state = loaded();
  const mine = mutation("update", 1, { title: "mine" }, { base_version: 0 });
  state.addPending(mine);
  eq(state.get(TODO, 1).fields.title, "mine");
  state.resolve(mine.id, {
    id: mine.id,
    status: "conflict",
    seq: null,
    version: 5,
    object: todo(1, 5, { title: "server", done: true }),
    error: { code: "stale", message: "Stale." },
  });
  eq(state.get(TODO, 1), { ...todo(1, 5, { title: "server", done: true }), pending: false });
});

test("resolve: rejected rolls the change back and changes nothing else", () => {
  const state = loaded();
  const before = state.view();
  const mine = mutation("update", 1, { title: "" });
  state.addPending(mine);
  eq(state.get(TODO, 1).fields.title, "");
  const returned = state.resolve(mine.id, {
    id: mine.id,
    status: "rejected",
    seq: null,
    version: null,
    object: null,
    error: { code: "validation_failed", message: "Validation failed." },
  });
  eq(returned, mine);
  eq(state.view(), before);
});

test("resolve: rejected create disappears from the view", () => {
  const state = loaded();
  const mine = mutation("create", 8, { title: "nope" });
  state.addPending(mine);
  ok(state.get(TODO, 8));
  state.resolve(mine.id, { id: mine.id, status: "rejected", object: null });
  eq(state.get(TODO, 8), undefined);
});

test("resolve: an applied delete removes the object from base", () => {
  const state = loaded();
  const mine = mutation("delete", 2, {}, { base_version: 3 });
  state.addPending(mine);
  eq(state.get(TODO, 2), undefined, "pending delete hides it at once");
  state.resolve(mine.id, { id: mine.id, status: "applied", seq: 3, version: 4, object: null });
  eq(state.pending, []);
  eq(state.base.has(objectKey(TODO, 2)), false);
  eq(state.get(TODO, 2), undefined);
});

test("resolve: gone removes the object from base", () => {
  const state = loaded();
  const mine = mutation("update", 2, { title: "too late" });
  state.addPending(mine);
  state.resolve(mine.id, {
    id: mine.id,
    status: "gone",
    object: null,
    error: { code: "gone", message: "Deleted." },
  });
  eq(state.base.has(objectKey(TODO, 2)), false);
  eq(state.pending, []);
});

test("resolve: an older result does not overwrite a newer base version", () => {
  const state = loaded();
  const mine = mutation("update", 1, { title: "mine" });
  state.addPending(mine);
  // The op of my change (v2) and someone else's (v3) arrived before my result.
  state.applyOps([
    op(3, "update", 1, 2, { title: "mine" }, mine.id),
    op(4, "update", 1, 3, { done: true }),
  ]);
  state.resolve(mine.id, {
    id: mine.id,
    status: "applied",
    seq: 3,
    version: 2,
    object: todo(1, 2, { title: "mine", done: false }),
  });
  eq(state.base.get(objectKey(TODO, 1)), todo(1, 3, { title: "mine", done: true }));
});

test("resolve: a result after its op and a later delete does not bring the object back", () => {
  const state = loaded();
  const mine = mutation("create", 9, { title: "new" });
  state.addPending(mine);
  // Someone deleted it right after; both ops came before my (late, replayed) result.
  state.applyOps([op(3, "create", 9, 1, { title: "new" }, mine.id), op(4, "delete", 9, 2)]);
  state.resolve(mine.id, {
    id: mine.id,
    status: "applied",
    seq: 3,
    version: 1,
    object: todo(9, 1, { title: "new" }),
  });
  eq(state.base.has(objectKey(TODO, 9)), false);
  eq(state.get(TODO, 9), undefined);
});

test("resolve: a late conflict (no seq) for an object deleted since does not bring it back", () => {
  const state = loaded();
  const mine = mutation("update", 1, { title: "mine" }, { base_version: 0 });
  state.addPending(mine);
  state.applyOps([op(3, "delete", 1, 2)]);
  state.resolve(mine.id, {
    id: mine.id,
    status: "conflict",
    seq: null,
    version: 1,
    object: todo(1, 1, { title: "milk", done: false }),
    error: { code: "stale", message: "Stale." },
  });
  eq(state.base.has(objectKey(TODO, 1)), false);
  // A create op of that key (a new object) is taken again.
  state.applyOps([op(4, "create", 1, 1, { title: "again" })]);
  eq(state.get(TODO, 1).fields.title, "again");
});

test("resolve: an unknown id returns undefined but still takes a newer object", () => {
  const state = loaded();
  const result = {
    id: "nope",
    status: /** @type {const} */ ("applied"),
    object: todo(1, 4, { title: "srv" }),
  };
  eq(state.resolve("nope", result), undefined);
  eq(state.base.get(objectKey(TODO, 1)), todo(1, 4, { title: "srv" }));
});

test("objects: one model or all, sorted by order, then by key", () => {
  const state = new StreamState(STREAM);
  state.loadSnapshot({
    epoch: "e1",
    seq: 1,
    objects: [
      todo(10, 1, { title: "no order b" }),
      todo(2, 1, { title: "no order a" }),
      todo(3, 1, { title: "second", order: "a1" }),
      todo(4, 1, { title: "first", order: "a0" }),
      todo(5, 1, { title: "third", order: "a1V" }),
      { model: "todos.list", pk: 1, version: 1, fields: { name: "groceries" } },
    ],
  });
  eq(
    state.objects(TODO).map((o) => o.fields.title),
    ["first", "second", "third", "no order a", "no order b"],
  );
  eq(state.objects().length, 6);
  eq(state.objects("todos.list").map((o) => o.pk), [1]);
});

test("objects: numeric order and numeric keys sort as numbers", () => {
  const state = new StreamState(STREAM);
  state.loadSnapshot({
    epoch: "e1",
    seq: 1,
    objects: [todo(1, 1, { order: 10 }), todo(2, 1, { order: 9 }), todo(30, 1, {}), todo(4, 1, {})],
  });
  eq(state.objects(TODO).map((o) => o.pk), [2, 1, 4, 30]);
});

test("toJSON / fromJSON: a round trip through JSON keeps everything", () => {
  const state = loaded();
  state.addPending(mutation("update", 2, { likes: { delta: 1 } }, { clock: "1764000000000:0" }));
  state.addPending(mutation("create", 7, { title: "jam" }));
  const data = JSON.parse(JSON.stringify(state));
  eq(data.stream, STREAM);
  eq(data, state.toJSON());
  const restored = StreamState.fromJSON(data);
  ok(restored instanceof StreamState);
  eq(restored.position, state.position);
  eq(restored.base, state.base);
  eq(restored.pending, state.pending);
  eq(restored.view(), state.view());
  restored.applyOps([op(3, "update", 1, 2, { done: true })]);
  eq(state.seq, 2, "the copies are independent");
});

test("toJSON: plain data that structuredClone accepts, sharing nothing", () => {
  const state = loaded();
  state.addPending(mutation("update", 1, { title: "x" }));
  const data = state.toJSON();
  eq(structuredClone(data), data);
  data.base[0].fields.title = "changed";
  data.pending[0].fields.title = "changed";
  eq(state.get(TODO, 1).fields.title, "x");
  eq(state.base.get(objectKey(TODO, 1)).fields.title, "milk");
});

test("fromJSON: a state that never had a snapshot", () => {
  const restored = StreamState.fromJSON(new StreamState(STREAM).toJSON());
  eq(restored.position, null);
  eq(restored.seq, 0);
});
