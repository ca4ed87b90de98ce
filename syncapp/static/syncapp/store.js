/**
 * One stream's state on the client: the authoritative objects (`base`, as of the
 * position `epoch`/`seq`) and the pending mutations, replayed on top of them to give
 * the optimistic view (DESIGN invariant 8).
 *
 * @module store
 */

import { classifyOp } from "./positions.js";

/** @typedef {string | number} PrimaryKey */

/**
 * @typedef {object} SyncObject
 * @property {string} model The model's `label_lower`, e.g. `"todos.todo"`.
 * @property {PrimaryKey} pk
 * @property {number | null} version `null` for an object only a pending create made.
 * @property {Record<string, unknown>} fields
 */

/** @typedef {SyncObject & {pending: boolean}} ViewObject */

/**
 * @typedef {object} Op
 * @property {string} [stream]
 * @property {string} epoch
 * @property {number} seq
 * @property {string} model
 * @property {PrimaryKey} pk
 * @property {"create" | "update" | "delete"} op
 * @property {Record<string, unknown>} [fields]
 * @property {number} version The object's version after the op.
 * @property {string | null} [mutation] The id of the mutation that caused it.
 */

/**
 * @typedef {object} Mutation
 * @property {string} id
 * @property {string} stream
 * @property {string} model
 * @property {PrimaryKey} pk
 * @property {"create" | "update" | "delete"} op
 * @property {Record<string, unknown>} [fields]
 * @property {number} [base_version]
 * @property {string} [clock]
 */

/**
 * @typedef {object} MutationResult
 * @property {string} id
 * @property {"applied" | "conflict" | "rejected" | "gone"} status
 * @property {number | null} [seq]
 * @property {number | null} [version]
 * @property {SyncObject | null} [object]
 * @property {{code: string, message: string, fields?: object, retry?: boolean} | null} [error]
 */

/**
 * @typedef {object} StreamStateData What `toJSON()` gives: plain data, for IndexedDB.
 * @property {string} stream
 * @property {string | null} epoch
 * @property {number} seq
 * @property {SyncObject[]} base
 * @property {Mutation[]} pending
 */

/**
 * The key of an object in the maps of this module.
 *
 * @param {string} model
 * @param {PrimaryKey} pk
 * @returns {string}
 */
export function objectKey(model, pk) {
  return `${model}|${JSON.stringify(pk)}`;
}

/**
 * Whether `value` is a counter change, `{"delta": <integer>}`.
 *
 * @param {unknown} value
 * @returns {value is {delta: number}}
 */
function isDelta(value) {
  return (
    typeof value === "object" &&
    value !== null &&
    !Array.isArray(value) &&
    Object.keys(value).length === 1 &&
    Number.isInteger(/** @type {{delta?: unknown}} */ (value).delta)
  );
}

/**
 * `current` with `changes` merged over it; a `{"delta": n}` change adds `n` to the
 * current number (0 when there is none).
 *
 * @param {Record<string, unknown>} current
 * @param {Record<string, unknown>} [changes]
 * @returns {Record<string, unknown>}
 */
function mergeFields(current, changes = {}) {
  const fields = { ...current };
  for (const [name, value] of Object.entries(changes)) {
    if (isDelta(value)) {
      const number = current[name];
      fields[name] = (typeof number === "number" ? number : 0) + value.delta;
    } else {
      fields[name] = value;
    }
  }
  return fields;
}

/**
 * Whether version `held` is newer than `other` (unknown versions are never newer).
 *
 * @param {number | null | undefined} held
 * @param {number | null | undefined} other
 * @returns {boolean}
 */
function isNewer(held, other) {
  return typeof held === "number" && typeof other === "number" && held > other;
}

/**
 * A copy that shares nothing mutable at the top two levels with `object`.
 *
 * @param {SyncObject} object
 * @returns {SyncObject}
 */
function copyObject({ model, pk, version, fields }) {
  return { model, pk, version, fields: { ...fields } };
}

/**
 * A deep copy of plain data.
 *
 * @template T
 * @param {T} value
 * @returns {T}
 */
function structuredCopy(value) {
  if (typeof structuredClone === "function") return structuredClone(value);
  return JSON.parse(JSON.stringify(value));
}

/**
 * Replay `mutations` over `objects`, in order, marking what they touch as pending.
 *
 * @param {Map<string, ViewObject>} objects Changed in place.
 * @param {Mutation[]} mutations
 * @returns {Map<string, ViewObject>}
 */
function replay(objects, mutations) {
  for (const mutation of mutations) {
    const { model, pk } = mutation;
    const key = objectKey(model, pk);
    const current = objects.get(key);
    if (mutation.op === "delete") {
      objects.delete(key);
    } else if (mutation.op === "create") {
      // A create of an existing object (the server will answer `conflict`, `exists`)
      // shows its fields merged over the existing ones.
      const fields = mergeFields(current?.fields ?? {}, mutation.fields);
      objects.set(key, { model, pk, version: current?.version ?? null, fields, pending: true });
    } else if (mutation.op === "update" && current !== undefined) {
      // An update of an object that is not there waits for the server to say `gone`.
      const fields = mergeFields(current.fields, mutation.fields);
      objects.set(key, { ...current, fields, pending: true });
    }
  }
  return objects;
}

/**
 * Order two field values: numbers as numbers, strings by code unit (not by locale, so
 * fractional-index strings like "a0" < "a0V" sort right), other types apart.
 *
 * @param {unknown} a
 * @param {unknown} b
 * @returns {number}
 */
function compareValues(a, b) {
  if (typeof a !== typeof b) return typeof a < typeof b ? -1 : 1;
  if (a === b) return 0;
  return /** @type {any} */ (a) < /** @type {any} */ (b) ? -1 : 1;
}

/**
 * The order of `objects()`: by the `order` field where objects have one (those without
 * come last), then by model and primary key.
 *
 * @param {SyncObject} a
 * @param {SyncObject} b
 * @returns {number}
 */
function compareObjects(a, b) {
  const orderA = a.fields.order;
  const orderB = b.fields.order;
  const hasA = orderA !== undefined && orderA !== null;
  const hasB = orderB !== undefined && orderB !== null;
  if (hasA !== hasB) return hasA ? -1 : 1;
  return (
    (hasA ? compareValues(orderA, orderB) : 0) ||
    compareValues(a.model, b.model) ||
    compareValues(a.pk, b.pk)
  );
}

/** One stream: its authoritative objects, its position, and its pending mutations. */
export class StreamState {
  /** @type {string | null} The epoch of `base`; `null` before the first snapshot. */
  epoch = null;
  /** The seq of `base`: every op up to it is in `base`. */
  seq = 0;
  /** @type {Map<string, SyncObject>} The objects as the server last described them. */
  base = new Map();
  /** @type {Mutation[]} Sent or waiting to be sent, not yet answered; in order. */
  pending = [];
  /** @type {Set<string>} Keys an op deleted since the last snapshot: a late result must not bring them back. */
  #deleted = new Set();

  /** @param {string} stream */
  constructor(stream) {
    this.stream = stream;
  }

  /**
   * The position of `base`, or `null` before the first snapshot.
   *
   * @returns {{epoch: string, seq: number} | null}
   */
  get position() {
    return this.epoch === null ? null : { epoch: this.epoch, seq: this.seq };
  }

  /**
   * Replace `base` and the position with a snapshot. Pending mutations stay.
   *
   * @param {{epoch: string, seq: number, objects: SyncObject[]}} snapshot
   */
  loadSnapshot({ epoch, seq, objects }) {
    this.epoch = epoch;
    this.seq = seq;
    this.base = new Map();
    this.#deleted = new Set();
    for (const object of objects) this.#put(object);
  }

  /**
   * Apply the ops that follow the position, in order; skip those seen already; stop at
   * the first gap or epoch change (the caller then resubscribes from `position`). An op
   * caused by a pending mutation confirms it: the mutation leaves `pending`.
   *
   * @param {Op[]} ops
   * @returns {{applied: Op[], stop: null | "gap" | "epoch"}} The ops applied, and why
   *   it stopped before the end, if it did.
   */
  applyOps(ops) {
    /** @type {Op[]} */
    const applied = [];
    for (const op of ops) {
      const kind = classifyOp(this.position, op);
      if (kind === "gap" || kind === "epoch") return { applied, stop: kind };
      if (kind === "apply") {
        this.#applyToBase(op);
        this.seq = op.seq;
        applied.push(op);
      }
      // A duplicate is in `base` already, so its mutation is confirmed all the same.
      if (op.mutation) this.#dropPending(op.mutation);
    }
    return { applied, stop: null };
  }

  /**
   * Queue a mutation on top of `base`. A mutation whose id is pending already is ignored.
   *
   * @param {Mutation} mutation
   */
  addPending(mutation) {
    if (!this.pending.some((queued) => queued.id === mutation.id)) this.pending.push(mutation);
  }

  /**
   * Take in the server's answer to a mutation: it leaves `pending`, and `base` takes
   * the object the server sent (unless `base` has a newer version of it already).
   * `applied`/`conflict` without an object (after a delete) and `gone` remove the
   * object; `rejected` changes nothing else, so the view rolls back. A result that
   * comes after its op (its `seq` is at or before the position: `base` holds that op
   * and maybe later ones) or whose object an op has deleted since is late: its object
   * is not taken, so it cannot bring back an object deleted meanwhile.
   *
   * @param {string} id
   * @param {MutationResult} result
   * @returns {Mutation | undefined} The mutation that was pending.
   */
  resolve(id, result) {
    const mutation = this.#dropPending(id);
    const { status, object } = result;
    const late = typeof result.seq === "number" && this.epoch !== null && result.seq <= this.seq;
    if (status === "applied" || status === "conflict") {
      if (object) {
        if (!late && !this.#deleted.has(objectKey(object.model, object.pk))) this.#putIfNewer(object);
      } else if (mutation) {
        this.base.delete(objectKey(mutation.model, mutation.pk));
      }
    } else if (status === "gone" && mutation) {
      this.base.delete(objectKey(mutation.model, mutation.pk));
    }
    return mutation;
  }

  /**
   * The optimistic view: `base` with every pending mutation replayed on top, in order.
   * The objects are fresh copies; `pending` marks those a pending mutation touches.
   *
   * @returns {Map<string, ViewObject>}
   */
  view() {
    /** @type {Map<string, ViewObject>} */
    const objects = new Map();
    for (const [key, object] of this.base) {
      objects.set(key, { ...copyObject(object), pending: false });
    }
    return replay(objects, this.pending);
  }

  /**
   * One object of the view, or `undefined`.
   *
   * @param {string} model
   * @param {PrimaryKey} pk
   * @returns {ViewObject | undefined}
   */
  get(model, pk) {
    const key = objectKey(model, pk);
    const object = this.base.get(key);
    /** @type {Map<string, ViewObject>} */
    const objects = new Map();
    if (object) objects.set(key, { ...copyObject(object), pending: false });
    const touching = this.pending.filter((m) => objectKey(m.model, m.pk) === key);
    return replay(objects, touching).get(key);
  }

  /**
   * The objects of the view, of one model or of all, sorted by their `order` field
   * where they have one, then by key.
   *
   * @param {string} [model]
   * @returns {ViewObject[]}
   */
  objects(model = undefined) {
    const objects = [...this.view().values()];
    const chosen = model === undefined ? objects : objects.filter((o) => o.model === model);
    return chosen.sort(compareObjects);
  }

  /**
   * Plain data (no functions, no maps) to persist and restore with `fromJSON`.
   *
   * @returns {StreamStateData}
   */
  toJSON() {
    return {
      stream: this.stream,
      epoch: this.epoch,
      seq: this.seq,
      base: [...this.base.values()].map(copyObject),
      pending: this.pending.map((mutation) => structuredCopy(mutation)),
    };
  }

  /**
   * A state from what `toJSON()` gave.
   *
   * @param {StreamStateData} data
   * @returns {StreamState}
   */
  static fromJSON(data) {
    const state = new StreamState(data.stream);
    state.epoch = data.epoch ?? null;
    state.seq = data.seq ?? 0;
    for (const object of data.base ?? []) state.#put(object);
    state.pending = (data.pending ?? []).map((mutation) => structuredCopy(mutation));
    return state;
  }

  /** @param {Op} op */
  #applyToBase(op) {
    const key = objectKey(op.model, op.pk);
    const current = this.base.get(key);
    if (op.op === "delete") {
      this.base.delete(key);
      this.#deleted.add(key);
      return;
    }
    if (op.op === "create") this.#deleted.delete(key);
    // A result may have put a newer version here already; an older op must not undo it.
    if (current && isNewer(current.version, op.version)) return;
    if (op.op === "create") {
      const { model, pk, version } = op;
      this.base.set(key, { model, pk, version, fields: { ...op.fields } });
    } else if (op.op === "update" && current) {
      // Ops carry values, never deltas: a plain merge.
      const fields = { ...current.fields, ...op.fields };
      this.base.set(key, { ...current, version: op.version, fields });
    }
    // An update of an object that is not here: nothing to update; the position moves on.
  }

  /** @param {SyncObject} object */
  #putIfNewer(object) {
    const key = objectKey(object.model, object.pk);
    const current = this.base.get(key);
    if (!(current && isNewer(current.version, object.version))) this.#put(object);
  }

  /** @param {SyncObject} object */
  #put(object) {
    this.base.set(objectKey(object.model, object.pk), copyObject(object));
  }

  /**
   * @param {string} id
   * @returns {Mutation | undefined}
   */
  #dropPending(id) {
    const index = this.pending.findIndex((mutation) => mutation.id === id);
    return index === -1 ? undefined : this.pending.splice(index, 1)[0];
  }
}
