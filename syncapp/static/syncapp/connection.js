// The live connection: picks a transport, falls back, reconnects, tries upward again.
//
// Transports are tried best first (WebSocket, SSE + POST, long-poll). When one fails to
// open, a plain HTTP request tells "this transport is blocked" (the server answers) from
// "the server is down" (it does not): a blocked transport is skipped until an upgrade
// probe, every `upgradeAfterMs`, finds it working again; a server that is down is retried
// with exponential backoff and full jitter, honouring Retry-After, until `maxAttempts`,
// after which the state is "offline" until the browser says it is online again or
// `retryNow()` is called. 401/403 and close 4401 are never retried blindly: the `auth`
// event asks the page to log in again.

import { Backoff } from "./backoff.js";
import { monotonicNow } from "./hlc.js";
import { TransportError } from "./transports/errors.js";
import { probe } from "./transports/http.js";
import { LongPollTransport } from "./transports/longpoll.js";
import { SSETransport } from "./transports/sse.js";
import { WebSocketTransport } from "./transports/websocket.js";

const READY_TIMEOUT_MS = 10000;

export const TRANSPORTS = {
  websocket: WebSocketTransport,
  sse: SSETransport,
  longpoll: LongPollTransport,
};

/**
 * @typedef {object} ConnectionEvents
 * @property {(stream: string, ops: object[]) => void} ops
 * @property {(stream: string, snapshot: object) => void} snapshot
 * @property {(stream: string, info: object) => void} reset
 * @property {(stream: string, change: object) => void} presence
 * @property {(stream: string) => void} subscribed
 * @property {(status: {state: string, transport: string|null, attempt: number, retryInMs: number|null}) => void} status
 * @property {() => void} live a transport is up and every stream was asked for
 * @property {(info: {status: number|string|null}) => void} auth
 * @property {(frame: object) => void} error
 */

export class Connection {
  /**
   * @param {{url: string, clientId: string, transports?: string[], backoff?: object,
   *          heartbeatMs?: number|null, upgradeAfterMs?: number,
   *          positionOf: (stream: string) => ({epoch: string, seq: number}|null),
   *          events: ConnectionEvents}} options
   */
  constructor({ url, clientId, transports = ["websocket", "sse", "longpoll"], backoff = {}, heartbeatMs = null, upgradeAfterMs = 60000, positionOf, events }) {
    for (const name of transports) {
      if (!(name in TRANSPORTS)) throw new TypeError(`unknown transport ${JSON.stringify(name)}`);
    }
    if (!transports.length) throw new TypeError("at least one transport is needed");
    this.url = url;
    this.clientId = clientId;
    this.order = transports;
    this.backoff = new Backoff(backoff);
    this.heartbeatMs = heartbeatMs;
    this.upgradeAfterMs = upgradeAfterMs;
    this.positionOf = positionOf;
    this.events = events;
    /** @type {Set<string>} */
    this.streams = new Set();
    /** @type {Map<string, number>} when each transport was found blocked */
    this.blocked = new Map();
    this.transport = null;
    this.state = "connecting";
    this.stopped = true;
    this.wake = null;
    this.upgradeTimer = null;
    this.everLive = false;
    this.connectionId = null;
    this.onOnline = () => this.retryNow();
    // Chromium keeps a WebSocket "open" for a while after the network is gone.
    this.onOffline = () => this.closed?.({ code: "offline", auth: false, fatal: false, reason: "the browser went offline" });
    this.stopSignal = null;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.stopSignal = new Promise((resolve) => {
      this.signalStop = () => resolve(null);
    });
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.addEventListener?.("offline", this.onOffline);
    this.run();
  }

  /** @param {string} stream */
  follow(stream) {
    if (this.streams.has(stream)) return;
    this.streams.add(stream);
    if (this.state === "live") this.subscribeOne(this.transport, stream);
  }

  /** @param {string} stream */
  unfollow(stream) {
    if (!this.streams.delete(stream)) return;
    if (this.state === "live") this.transport.unsubscribe(stream);
  }

  /**
   * Ask again from the current position (after a gap), or from a snapshot (`fresh`).
   * @param {string} stream
   */
  resubscribe(stream) {
    if (this.state === "live" && this.streams.has(stream)) this.subscribeOne(this.transport, stream);
  }

  /**
   * @param {object[]} mutations
   * @returns {Promise<object[]>}
   */
  mutate(mutations) {
    if (this.state !== "live") return Promise.reject(new TransportError("closed", "not connected"));
    return this.transport.mutate(mutations);
  }

  /**
   * @param {string} stream
   * @param {object} state
   */
  presence(stream, state) {
    if (this.state === "live" && this.transport.supportsPresence) this.transport.presence(stream, state);
  }

  get transportName() {
    return this.state === "live" ? this.transport.name : null;
  }

  get supportsPresence() {
    return this.state === "live" && this.transport.supportsPresence;
  }

  /** Stop waiting: try to connect now. */
  retryNow() {
    if (this.stopped) return;
    this.backoff.reset();
    this.wake?.();
  }

  close() {
    this.stopped = true;
    this.signalStop?.();
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.removeEventListener?.("offline", this.onOffline);
    clearTimeout(this.upgradeTimer);
    this.transport?.close();
    this.transport = null;
    this.wake?.();
    this.setState("closed");
  }

  /**
   * @param {string} state
   * @param {{attempt?: number, retryInMs?: number|null}} [extra]
   */
  setState(state, extra = {}) {
    this.state = state;
    this.events.status({
      state,
      transport: state === "live" ? this.transport?.name ?? null : null,
      attempt: extra.attempt ?? this.backoff.attempts,
      retryInMs: extra.retryInMs ?? null,
    });
  }

  /** Wait `ms` (or forever when null), or until `retryNow()`/`online`/`close()`. */
  sleep(ms) {
    return new Promise((resolve) => {
      const timer = ms === null ? null : setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }

  async run() {
    while (!this.stopped) {
      this.setState(this.everLive ? "reconnecting" : "connecting");
      let outcome;
      if (globalThis.navigator?.onLine === false) {
        outcome = { kind: "down", retryAfterMs: null };
      } else {
        outcome = await this.connect();
      }
      if (this.stopped) {
        outcome.transport?.close();
        return;
      }
      if (outcome.kind === "live") {
        await this.live(outcome.transport);
        continue;
      }
      if (outcome.kind === "auth") {
        this.events.auth({ status: outcome.status ?? null });
        this.setState("offline");
        await this.sleep(null);
        continue;
      }
      const delay = globalThis.navigator?.onLine === false ? null : this.backoff.next(outcome.retryAfterMs);
      if (delay === null) {
        this.setState("offline");
        await this.sleep(null);
        this.backoff.reset();
        continue;
      }
      this.setState(this.everLive ? "reconnecting" : "connecting", { retryInMs: delay });
      await this.sleep(delay);
    }
  }

  /**
   * Try the transports best first.
   * @returns {Promise<{kind: "live"|"auth"|"down", transport?: any, status?: number|null, retryAfterMs?: number|null}>}
   */
  async connect() {
    const now = monotonicNow();
    const candidates = this.order.filter(
      (name, index) => index === this.order.length - 1 || !this.blocked.has(name) || now - this.blocked.get(name) > this.upgradeAfterMs,
    );
    let retryAfterMs = null;
    for (const name of candidates) {
      // A transport is blocked only if it fails twice while the server answers HTTP: the
      // server may have come up between the first try and the probe (a restart).
      for (let tries = 1; ; tries += 1) {
        try {
          const transport = await this.attempt(name, this.handlersFor());
          this.blocked.delete(name);
          return { kind: "live", transport };
        } catch (error) {
          if (this.stopped) return { kind: "down" };
          if (error.kind === "auth") return { kind: "auth", status: error.status ?? error.code };
          retryAfterMs = error.retryAfterMs ?? retryAfterMs;
        }
        const reach = await probe(this.url, [...this.streams][0]);
        if (!reach.up) return { kind: "down", retryAfterMs };
        if (reach.status === 401 || reach.status === 403) return { kind: "auth", status: reach.status };
        if (reach.status === 429 || reach.status >= 500) return { kind: "down", retryAfterMs };
        if (tries === 2) break;
      }
      // The server answers HTTP, so this transport is what does not get through.
      this.blocked.set(name, monotonicNow());
    }
    return { kind: "down", retryAfterMs };
  }

  /**
   * Open transport `name` and wait until it is usable: the WebSocket's `welcome`, or for
   * SSE and long-poll the first stream answering.
   * @param {string} name
   * @param {import("./transports/errors.js").TransportHandlers} handlers
   */
  async attempt(name, handlers) {
    let settle;
    const ready = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    // Awaited only while SSE or long-poll open; a later close must not leave it rejected
    // and unhandled (every closing WebSocket did).
    ready.catch(() => {});
    const first = [...this.streams][0];
    const wrapped = {
      ...handlers,
      onSubscribed: (stream, info) => {
        if (stream === first) settle.resolve();
        handlers.onSubscribed?.(stream, info);
      },
      onClose: (info) => {
        settle.reject(new TransportError(info.auth ? "auth" : "blocked", info.reason, { code: info.code, retryAfterMs: info.retryAfterMs }));
        handlers.onClose(info);
      },
    };
    const Transport = TRANSPORTS[name];
    const transport = new Transport({ url: this.url, clientId: this.clientId, handlers: wrapped, heartbeatMs: this.heartbeatMs });
    handlers.bind?.(transport);
    this.pendingTransport = transport;
    try {
      await transport.open();
      if (name === "websocket" || first === undefined) return transport;
      this.subscribeOne(transport, first);
      transport.opened = first;
      let timer;
      await Promise.race([
        ready,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new TransportError("timeout", `${name} did not answer`)), READY_TIMEOUT_MS);
        }),
      ]).finally(() => clearTimeout(timer));
      return transport;
    } catch (error) {
      transport.close();
      throw error;
    } finally {
      this.pendingTransport = null;
    }
  }

  /**
   * Handlers that forward to the client while their transport is the current one (or
   * the one being opened): a replaced transport's late reports are dropped.
   */
  handlersFor() {
    const self = this;
    let me = null;
    const mine = () => me !== null && self.transport === me;
    const opening = () => mine() || (me !== null && self.pendingTransport === me);
    const handlers = {
      bind(transport) {
        me = transport;
      },
      onOps: (stream, ops) => opening() && self.events.ops(stream, ops),
      onSnapshot: (stream, snapshot) => opening() && self.events.snapshot(stream, snapshot),
      onReset: (stream, info) => opening() && self.events.reset(stream, info),
      onSubscribed: (stream) => mine() && self.events.subscribed(stream),
      onPresence: (stream, change) => mine() && self.events.presence(stream, change),
      onError: (frame) => mine() && self.events.error(frame),
      onWelcome: (frame) => opening() && self.events.welcome?.(frame),
      onClose: (info) => mine() && self.closed?.(info),
    };
    return handlers;
  }

  /**
   * @param {any} transport
   * @param {string} stream
   */
  subscribeOne(transport, stream) {
    const result = transport.subscribe(stream, this.positionOf(stream));
    if (result && typeof result.catch === "function") result.catch(() => {});
  }

  /**
   * Be live on `transport` until it closes.
   * @param {any} transport
   */
  async live(transport) {
    this.transport = transport;
    this.connectionId = transport.connectionId ?? null;
    this.everLive = true;
    this.backoff.reset();
    const closed = new Promise((resolve) => {
      this.closed = (info) => {
        this.closed = null;
        resolve(info);
      };
    });
    for (const stream of this.streams) {
      // SSE and long-poll already follow the first stream: attempt() opened it.
      if (transport.opened !== stream) this.subscribeOne(transport, stream);
    }
    this.setState("live");
    this.events.live();
    this.scheduleUpgrade(transport);
    const info = await Promise.race([closed, this.stopSignal]);
    clearTimeout(this.upgradeTimer);
    if (this.stopped || !info) return;
    this.transport = null;
    transport.close();
    if (info.auth) {
      this.events.auth({ status: info.code });
      this.setState("offline");
      await this.sleep(null);
    } else if (info.fatal) {
      this.events.error({ code: "closed", message: info.reason });
      this.setState("offline");
      await this.sleep(null);
    }
  }

  /** While on a fallback, look for the better transports again now and then. */
  scheduleUpgrade(transport) {
    const index = this.order.indexOf(transport.name);
    if (index <= 0) return;
    this.upgradeTimer = setTimeout(async () => {
      if (this.stopped || this.transport !== transport) return;
      for (const name of this.order.slice(0, index)) {
        const noop = () => {};
        try {
          const trial = await this.attempt(name, {
            onOps: noop,
            onSnapshot: noop,
            onReset: noop,
            onClose: noop,
          });
          trial.close();
        } catch {
          continue;
        }
        // It works again: reconnect, which picks it.
        this.blocked.delete(name);
        if (this.transport === transport) {
          this.closed?.({ code: "upgrade", auth: false, fatal: false, reason: `upgrading to ${name}` });
        }
        return;
      }
      this.scheduleUpgrade(transport);
    }, this.upgradeAfterMs);
  }
}
