/**
 * Random identifiers: UUID version 4, as mutation ids (the server's idempotency keys).
 *
 * @module ids
 */

const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

/**
 * A random UUID (version 4): `crypto.randomUUID()` where the page may use it (secure
 * contexts), else built from `crypto.getRandomValues()`.
 *
 * @param {{randomUUID?: () => string, getRandomValues?: (bytes: Uint8Array) => Uint8Array}
 *   | null} [source] Where the randomness comes from: `globalThis.crypto` unless a test
 *   passes another.
 * @returns {string} e.g. `"0b6c5d4e-8f7a-4c1b-9e2d-3a4b5c6d7e8f"`.
 */
export function uuid(source = globalThis.crypto) {
  if (typeof source?.randomUUID === "function") return source.randomUUID();
  if (typeof source?.getRandomValues !== "function") {
    throw new Error("uuid() needs crypto.getRandomValues(), which this environment lacks.");
  }
  const bytes = source.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 10xx (RFC 9562)
  const hex = Array.from(bytes, (byte) => HEX[byte]).join("");
  return [
    hex.slice(0, 8),
    hex.slice(8, 12),
    hex.slice(12, 16),
    hex.slice(16, 20),
    hex.slice(20),
  ].join("-");
}
