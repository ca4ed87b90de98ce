/**
 * Where an op stands relative to a stream position: the next one, one seen already,
 * one past a gap, or one from another epoch (the history was reset).
 *
 * @module positions
 */

/**
 * @typedef {object} Position
 * @property {string} epoch
 * @property {number} seq
 */

/** @typedef {"apply" | "duplicate" | "gap" | "epoch"} OpClass */

/**
 * What to do with `op` at `position`:
 * - `"apply"`: same epoch, the next seq;
 * - `"duplicate"`: same epoch, a seq already applied (a replay overlapping live delivery);
 * - `"gap"`: same epoch with seqs missing before it, or no position yet;
 * - `"epoch"`: another epoch.
 *
 * @param {Position | null | undefined} position
 * @param {{epoch: string, seq: number}} op
 * @returns {OpClass}
 */
export function classifyOp(position, op) {
  if (position == null) return "gap";
  if (op.epoch !== position.epoch) return "epoch";
  if (op.seq <= position.seq) return "duplicate";
  return op.seq === position.seq + 1 ? "apply" : "gap";
}
