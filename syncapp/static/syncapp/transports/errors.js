// What transports report, and how they fail.

/**
 * @typedef {object} TransportHandlers
 * @property {(stream: string, ops: object[]) => void} onOps ops in seq order
 * @property {(stream: string, snapshot: {epoch: string, seq: number, objects: object[]}) => void} onSnapshot
 * @property {(stream: string, info: {reason?: string, epoch?: string}) => void} onReset the position cannot be resumed
 * @property {(info: {code: number|string, auth: boolean, fatal: boolean, reason: string, retryAfterMs?: number|null}) => void} onClose
 *   the transport stopped after it had opened
 * @property {(stream: string, info: {epoch: string, head: number}) => void} [onSubscribed]
 * @property {(stream: string, change: {members?: object, joins?: object, leaves?: string[]}) => void} [onPresence]
 * @property {(frame: {code: string, message: string, stream?: string}) => void} [onError]
 * @property {(frame: {time?: string, connection_id?: string}) => void} [onWelcome] the WebSocket's `welcome`
 */

/**
 * Why a transport could not open or a request failed.
 *
 * `kind` is one of: `blocked` (the transport does not get through), `timeout`,
 * `network` (no HTTP answer at all), `auth` (401/403, close 4401), `unavailable`
 * (429/503: try later, see `retryAfterMs`), `refused` (the server refused the request
 * as malformed, see `code` and `problem`), `closed` (the connection went away).
 */
export class TransportError extends Error {
  /**
   * @param {string} kind
   * @param {string} message
   * @param {{status?: number, code?: string|number, retryAfterMs?: number|null, problem?: object}} [extra]
   */
  constructor(kind, message, extra = {}) {
    super(message);
    this.name = "TransportError";
    this.kind = kind;
    this.status = extra.status ?? null;
    this.code = extra.code ?? null;
    this.retryAfterMs = extra.retryAfterMs ?? null;
    this.problem = extra.problem ?? null;
  }
}
