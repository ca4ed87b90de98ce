// The WebSocket transport: protocol version 1 at `<url>ws/` (docs/protocol.md).
//
// It speaks the frames, answers nothing on its own but pings, and reports what arrives
// through the handlers the connection gives it. Ordering, gaps and retries are the
// connection's and the store's business.

import { monotonicNow } from "../hlc.js";
import { TransportError } from "./errors.js";

/** The ref of every subscribe frame: an error frame carrying it refused a subscribe. */
export const SUBSCRIBE_REF = "subscribe";

/** @typedef {import("./errors.js").TransportHandlers} TransportHandlers */

const OPEN_TIMEOUT_MS = 8000;

/** Close codes after which a blind reconnect would fail the same way. */
const AUTH_CLOSE = 4401;
const PROTOCOL_CLOSE = 4400;

export class WebSocketTransport {
  /**
   * @param {{url: string, clientId: string, handlers: TransportHandlers,
   *          heartbeatMs?: number|null, WebSocketImpl?: typeof WebSocket}} options
   */
  constructor({ url, clientId, handlers, heartbeatMs = null, WebSocketImpl = globalThis.WebSocket }) {
    this.name = "websocket";
    this.url = url;
    this.clientId = clientId;
    this.handlers = handlers;
    this.heartbeatOverride = heartbeatMs;
    this.WebSocketImpl = WebSocketImpl;
    /** @type {WebSocket|null} */
    this.socket = null;
    /** @type {Map<number, {resolve: Function, reject: Function}>} */
    this.waiting = new Map();
    this.nextRef = 1;
    this.heartbeatMs = 25000;
    this.maxBatch = 100;
    this.connectionId = null;
    this.lastHeard = 0;
    this.timer = null;
    this.closed = false;
  }

  /** The WebSocket URL for an HTTP(S) base URL such as "/sync/". */
  socketUrl() {
    const base = new URL(this.url, globalThis.location?.href);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    base.pathname = base.pathname.replace(/\/?$/, "/") + "ws/";
    return base.toString();
  }

  /**
   * Connect and say hello; resolves on `welcome`.
   * @returns {Promise<void>}
   */
  open() {
    return new Promise((resolve, reject) => {
      let welcomed = false;
      let socket;
      try {
        socket = new this.WebSocketImpl(this.socketUrl());
      } catch (error) {
        reject(new TransportError("blocked", String(error)));
        return;
      }
      this.socket = socket;
      const timeout = setTimeout(() => {
        reject(new TransportError("timeout", "no welcome"));
        socket.close();
      }, OPEN_TIMEOUT_MS);
      socket.onopen = () => {
        socket.send(JSON.stringify({ type: "hello", client_id: this.clientId, protocol: 1 }));
      };
      socket.onmessage = (event) => {
        this.lastHeard = monotonicNow();
        if (typeof event.data !== "string") return;
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        if (!welcomed && frame.type === "welcome") {
          welcomed = true;
          clearTimeout(timeout);
          this.heartbeatMs = this.heartbeatOverride ?? frame.heartbeat_ms ?? this.heartbeatMs;
          this.maxBatch = frame.max_batch ?? this.maxBatch;
          this.connectionId = frame.connection_id ?? null;
          this.handlers.onWelcome?.(frame);
          this.startHeartbeat();
          resolve();
          return;
        }
        this.receive(frame);
      };
      socket.onclose = (event) => {
        clearTimeout(timeout);
        this.stopHeartbeat();
        this.failWaiting(new TransportError("closed", `closed with ${event.code}`));
        if (!welcomed) {
          const kind = event.code === AUTH_CLOSE ? "auth" : "blocked";
          reject(new TransportError(kind, `closed with ${event.code} before welcome`, { code: event.code }));
          return;
        }
        if (this.closed) return;
        this.closed = true;
        this.handlers.onClose({
          code: event.code,
          auth: event.code === AUTH_CLOSE,
          fatal: event.code === PROTOCOL_CLOSE || event.code === 1009,
          reason: event.reason || `closed with ${event.code}`,
        });
      };
    });
  }

  /** @param {any} frame */
  receive(frame) {
    const h = this.handlers;
    switch (frame.type) {
      case "ops":
        h.onOps(frame.stream, frame.ops);
        break;
      case "snapshot":
        h.onSnapshot(frame.stream, frame);
        break;
      case "subscribed":
        h.onSubscribed?.(frame.stream, { epoch: frame.epoch, head: frame.head });
        break;
      case "reset":
        h.onReset(frame.stream, frame);
        break;
      case "presence_state":
        h.onPresence?.(frame.stream, { members: frame.members });
        break;
      case "presence":
        h.onPresence?.(frame.stream, { joins: frame.joins, leaves: frame.leaves });
        break;
      case "ack": {
        const waiter = this.waiting.get(frame.ref);
        if (waiter) {
          this.waiting.delete(frame.ref);
          waiter.resolve(frame.results);
        }
        break;
      }
      case "error": {
        const waiter = frame.ref !== undefined ? this.waiting.get(frame.ref) : undefined;
        if (waiter) {
          this.waiting.delete(frame.ref);
          waiter.reject(
            new TransportError("refused", frame.message, {
              code: frame.code,
              retryAfterMs: frame.retry_after_ms ?? null,
            }),
          );
        } else {
          h.onError?.(frame);
        }
        break;
      }
      default:
        break; // pong, unsubscribed, and frames of later protocol versions
    }
  }

  /** @param {any} frame */
  send(frame) {
    if (this.socket && this.socket.readyState === 1) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /**
   * @param {string} stream
   * @param {{epoch: string, seq: number}|null} position
   */
  subscribe(stream, position) {
    // The ref comes back on an error frame that refuses this subscribe (rate_limited).
    const frame = { type: "subscribe", stream, ref: SUBSCRIBE_REF };
    if (position && position.epoch) frame.after = { epoch: position.epoch, seq: position.seq };
    this.send(frame);
  }

  /** @param {string} stream */
  unsubscribe(stream) {
    this.send({ type: "unsubscribe", stream });
  }

  /**
   * Send a batch of mutations; resolves with their results.
   * @param {object[]} mutations
   * @returns {Promise<object[]>}
   */
  mutate(mutations) {
    return new Promise((resolve, reject) => {
      const ref = this.nextRef++;
      this.waiting.set(ref, { resolve, reject });
      if (!this.send({ type: "mutate", ref, mutations })) {
        this.waiting.delete(ref);
        reject(new TransportError("closed", "not connected"));
      }
    });
  }

  /**
   * @param {string} stream
   * @param {object} state
   */
  presence(stream, state) {
    this.send({ type: "presence", stream, state });
  }

  get supportsPresence() {
    return true;
  }

  startHeartbeat() {
    this.stopHeartbeat();
    // A monotonic clock: setting the system clock must neither kill a healthy
    // connection (forward) nor stop the pings and the dead-connection check (back).
    this.lastHeard = monotonicNow();
    const interval = this.heartbeatMs;
    let lastPing = monotonicNow();
    this.timer = setInterval(() => {
      const now = monotonicNow();
      // Two intervals without a frame (pongs included) means the connection is dead,
      // even if the browser has not noticed: a ping went unanswered twice.
      if (now - this.lastHeard > 2 * interval) {
        this.abort("heartbeat timeout");
        return;
      }
      if (now - lastPing >= interval) {
        lastPing = now;
        this.send({ type: "ping", ts: Date.now() });
      }
    }, Math.max(50, interval / 4));
  }

  stopHeartbeat() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** @param {Error} error */
  failWaiting(error) {
    for (const waiter of this.waiting.values()) waiter.reject(error);
    this.waiting.clear();
  }

  /** Drop a connection that looks dead and report it as closed. */
  abort(reason) {
    if (this.closed) return;
    this.closed = true;
    this.stopHeartbeat();
    this.failWaiting(new TransportError("closed", reason));
    try {
      this.socket?.close(4000, reason);
    } catch {
      // already closing
    }
    this.handlers.onClose({ code: 4000, auth: false, fatal: false, reason });
  }

  /** Close on purpose: no onClose report. */
  close() {
    this.closed = true;
    this.stopHeartbeat();
    this.failWaiting(new TransportError("closed", "closed"));
    try {
      this.socket?.close(1000);
    } catch {
      // already closed
    }
  }
}
