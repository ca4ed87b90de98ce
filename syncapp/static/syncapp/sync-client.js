// syncapp's browser client: live streams, optimistic mutations, offline queue, presence.
//
//   import { SyncClient } from "/static/syncapp/sync-client.js";
//   const client = new SyncClient({ url: "/sync/" });
//   const list = client.stream("todos.list:3f0c...");
//   list.on("change", () => render(list.objects("todos.todo")));
//   client.start();
//
// See docs/browser-client.md. The view a page renders is the last authoritative state of
// each stream with this client's pending mutations replayed on top (DESIGN invariant 8).

import { Batcher, batchWindowFor } from "./batcher.js";
import { Connection } from "./connection.js";
import { Clock } from "./hlc.js";
import { uuid } from "./ids.js";
import { openPersist } from "./persist.js";
import { StreamState } from "./store.js";
import { Tabs } from "./tabs.js";
import { throttle } from "./throttle.js";
import { apiUrl, csrfToken, fetchSnapshot, requestJSON } from "./transports/http.js";
import { SUBSCRIBE_REF } from "./transports/websocket.js";

export { TransportError } from "./transports/errors.js";

const CATCH_UP_PAGE = 500;
const SAVE_DELAY_MS = 150;
const RETRY_DELAY_MS = 1000;
const SYNC_TAG = "syncapp-flush";

/** A minimal event emitter: `on(type, fn)` returns the function that stops listening. */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
  }

  /**
   * @param {string} type
   * @param {(detail: any) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  /**
   * @param {string} type
   * @param {any} detail
   */
  emit(type, detail) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(detail);
      } catch (error) {
        console.error(`syncapp: a ${type} listener failed`, error);
      }
    }
  }
}

/** One stream as the page sees it: objects, events, presence. */
export class StreamHandle extends Emitter {
  /**
   * @param {SyncClient} client
   * @param {string} name
   */
  constructor(client, name) {
    super();
    this.client = client;
    this.name = name;
    this.state = new StreamState(name);
    this.wanted = false;
    /** @type {Map<string, {user: any, client_id: string, state: object}>} */
    this.members = new Map();
    this.ownPresence = {};
    const send = throttle(() => client.sendPresence(name, { ...this.ownPresence }), 1000 / client.options.presenceRateHz);
    this.presence = {
      /** @param {object} partial merged into this connection's presence state */
      set: (partial) => {
        this.ownPresence = { ...this.ownPresence, ...partial };
        send(this.ownPresence);
      },
      /** The current members: connection id -> {user, client_id, state}. */
      members: () => new Map(this.members),
      /** Members grouped by user id: one entry per person. */
      byUser: () => {
        /** @type {Map<any, {user: any, states: object[], connections: string[]}>} */
        const people = new Map();
        for (const [id, member] of this.members) {
          const key = member.user ? member.user.id : `anonymous:${id}`;
          if (!people.has(key)) people.set(key, { user: member.user, states: [], connections: [] });
          people.get(key).states.push(member.state);
          people.get(key).connections.push(id);
        }
        return people;
      },
      flush: () => send.flush(),
    };
  }

  /** @param {string} [model] */
  objects(model) {
    return this.state.objects(model);
  }

  /**
   * @param {string} model
   * @param {string|number} pk
   */
  get(model, pk) {
    return this.state.get(model, pk);
  }

  /** @returns {{epoch: string, seq: number}|null} */
  get position() {
    return this.state.epoch ? { epoch: this.state.epoch, seq: this.state.seq } : null;
  }
}

/** The stable client id of this browser profile and origin (idempotency owner of anonymous writes). */
function stableClientId() {
  const key = "syncapp:client-id";
  try {
    let id = globalThis.localStorage?.getItem(key);
    if (!id) {
      id = `web-${uuid()}`;
      globalThis.localStorage?.setItem(key, id);
    }
    return id;
  } catch {
    return `web-${uuid()}`;
  }
}

export class SyncClient extends Emitter {
  /**
   * @param {{url?: string, transports?: string[], backoff?: {baseMs?: number, capMs?: number, maxAttempts?: number},
   *          persist?: boolean, dbName?: string, shareTabs?: boolean, serviceWorker?: string|null,
   *          heartbeatMs?: number|null, upgradeAfterMs?: number, presenceRateHz?: number,
   *          batchWindowMs?: number|null, clientId?: string}} [options]
   */
  constructor(options = {}) {
    super();
    this.options = {
      url: "/sync/",
      transports: ["websocket", "sse", "longpoll"],
      backoff: {},
      persist: true,
      dbName: "syncapp",
      shareTabs: true,
      serviceWorker: null,
      heartbeatMs: null,
      upgradeAfterMs: 60000,
      presenceRateHz: 20,
      batchWindowMs: null,
      ...options,
    };
    this.url = this.options.url.replace(/\/?$/, "/");
    this.clientId = this.options.clientId ?? stableClientId();
    /** @type {Map<string, StreamHandle>} */
    this.streams = new Map();
    /** @type {Map<string, {resolve: Function}>} */
    this.waiters = new Map();
    /** @type {Map<string, object>} this tab's mutations (made or restored) until their result */
    this.made = new Map();
    /** @type {Map<string, object>} the leader's mutations to send, in order */
    this.outbox = new Map();
    /** @type {Set<string>} */
    this.inflight = new Set();
    /** @type {Map<string, Set<string>>} the streams each follower tab wants */
    this.wants = new Map();
    /** @type {Map<string, object>} the latest presence state per stream, from any tab */
    this.presenceOut = new Map();
    /** @type {Map<string, object[]>} ops held while a stream catches up */
    this.catchingUp = new Map();
    /** @type {Set<string>} */
    this.resubscribing = new Set();
    /** Subscribes refused in a row per stream (internal_error backs off on these). */
    this.subscribeRefusals = new Map();
    /** @type {Map<string, any>} */
    this.saveTimers = new Map();
    this.clock = new Clock();
    this.persist = null;
    this.connection = null;
    this.tabs = null;
    this.started = false;
    this.status = { state: "connecting", transport: null, attempt: 0, retryInMs: null };
    this.batcher = new Batcher((batch) => this.sendBatch(batch), {
      windowMs: this.options.batchWindowMs ?? batchWindowFor(globalThis.navigator?.connection),
      maxSize: 100,
    });
    this.onPageHide = () => this.suspend();
    this.onPageShow = (event) => {
      if (event.persisted) this.resume();
    };
  }

  // -- the page's API ------------------------------------------------------------------

  /** Restore what IndexedDB kept, then connect (or follow the leader tab). */
  async start() {
    if (this.started) return;
    this.started = true;
    // persist: false keeps everything in memory (indexedDB: null is openPersist's switch).
    this.persist = await openPersist(this.options.dbName, this.options.persist ? {} : { indexedDB: null });
    for (const mutation of await this.persist.allPending()) this.adopt(mutation);
    await Promise.all([...this.streams.values()].map((handle) => this.restore(handle)));
    globalThis.addEventListener?.("pagehide", this.onPageHide);
    globalThis.addEventListener?.("pageshow", this.onPageShow);
    this.joinTabs();
    this.registerServiceWorker();
  }

  /**
   * The handle of stream `name`, followed while the client runs.
   * @param {string} name
   * @returns {StreamHandle}
   */
  stream(name) {
    const handle = this.handleOf(name);
    if (!handle.wanted) {
      handle.wanted = true;
      if (this.started) this.restore(handle).then(() => this.want(name));
    }
    return handle;
  }

  get state() {
    return this.status.state;
  }

  get transport() {
    return this.status.transport;
  }

  get pendingCount() {
    let count = 0;
    for (const handle of this.streams.values()) count += handle.state.pending.length;
    return count;
  }

  get isLeader() {
    return Boolean(this.tabs?.leader);
  }

  /** The presence member id of this origin's connection (shared by its tabs). */
  get connectionId() {
    return this.status.connectionId ?? null;
  }

  /**
   * Queue a mutation; it shows in the view at once. Resolves with its result.
   * @param {{stream: string, model: string, pk: any, op: "create"|"update"|"delete",
   *          fields?: object, base_version?: number, id?: string, clock?: string}} mutation
   * @returns {Promise<object>}
   */
  mutate(mutation) {
    for (const key of ["stream", "model", "op"]) {
      if (typeof mutation[key] !== "string" || !mutation[key]) throw new TypeError(`mutation.${key} must be a non-empty string`);
    }
    if (!["create", "update", "delete"].includes(mutation.op)) throw new TypeError(`unknown op ${JSON.stringify(mutation.op)}`);
    if (mutation.pk === undefined || mutation.pk === null) throw new TypeError("mutation.pk is required: clients choose the keys of what they create");
    const full = { fields: {}, ...mutation, id: mutation.id ?? uuid(), clock: mutation.clock ?? this.clock.tick() };
    if (full.base_version === undefined) delete full.base_version;
    const result = new Promise((resolve) => this.waiters.set(full.id, { resolve }));
    const handle = this.handleOf(full.stream);
    this.made.set(full.id, full);
    handle.state.addPending(full);
    handle.emit("change", { cause: "local", ops: [] });
    this.announce();
    const saved = this.persist ? this.persist.putPending(full).catch((error) => this.emit("error", { code: "persist", message: String(error) })) : Promise.resolve();
    saved.then(() => {
      if (this.isLeader) this.enqueue(full);
      else if (this.tabs) this.tabs.post({ t: "mutate", mutations: [full] });
    });
    return result;
  }

  /**
   * @param {string} stream
   * @param {string} model
   * @param {any} pk
   * @param {object} fields
   */
  create(stream, model, pk, fields) {
    return this.mutate({ stream, model, pk, op: "create", fields });
  }

  /**
   * @param {string} stream
   * @param {string} model
   * @param {any} pk
   * @param {object} fields
   * @param {{baseVersion?: number}} [options]
   */
  update(stream, model, pk, fields, { baseVersion } = {}) {
    return this.mutate({ stream, model, pk, op: "update", fields, base_version: baseVersion });
  }

  /**
   * @param {string} stream
   * @param {string} model
   * @param {any} pk
   * @param {{baseVersion?: number}} [options]
   */
  delete(stream, model, pk, { baseVersion } = {}) {
    return this.mutate({ stream, model, pk, op: "delete", fields: {}, base_version: baseVersion });
  }

  /** Connect now instead of waiting (the "offline" state waits for this or `online`). */
  retryNow() {
    if (this.isLeader) this.connection?.retryNow();
    else this.tabs?.post({ t: "retry" });
  }

  close() {
    this.suspend();
    globalThis.removeEventListener?.("pagehide", this.onPageHide);
    globalThis.removeEventListener?.("pageshow", this.onPageShow);
    this.persist?.close();
    this.started = false;
    this.setStatus({ state: "closed", transport: null, attempt: 0, retryInMs: null });
  }

  // -- tabs ------------------------------------------------------------------------------

  joinTabs() {
    this.tabs = new Tabs({
      name: `syncapp:${new URL(this.url, globalThis.location?.href ?? "http://localhost/").pathname}`,
      onLead: () => this.lead(),
      onMessage: (message) => this.fromTab(message),
      ...(this.options.shareTabs ? {} : { locks: null }),
    });
    this.tabs.start();
    if (!this.tabs.leader) this.hello();
  }

  hello() {
    this.tabs.post({ t: "hello", streams: this.wantedStreams(), pending: this.ownPending(), presence: Object.fromEntries(this.presenceOut) });
  }

  /** This tab now holds the connection. */
  async lead() {
    this.connection = new Connection({
      url: this.url,
      clientId: this.clientId,
      transports: this.options.transports,
      backoff: this.options.backoff,
      heartbeatMs: this.options.heartbeatMs,
      upgradeAfterMs: this.options.upgradeAfterMs,
      positionOf: (stream) => this.handleOf(stream).position,
      events: {
        ops: (stream, ops) => this.receiveOps(stream, ops),
        snapshot: (stream, snapshot) => this.receiveSnapshot(stream, snapshot),
        reset: (stream, info) => this.receiveReset(stream, info),
        presence: (stream, change) => this.receivePresence(stream, change),
        subscribed: (stream) => this.subscribed(stream),
        status: (status) => this.setStatus({ ...status, connectionId: this.connection?.connectionId ?? null }),
        live: () => this.flushOutbox(),
        auth: (info) => this.authNeeded(info),
        error: (frame) => this.serverError(frame),
        // A clock that is behind catches up with the server before the first write.
        welcome: (frame) => this.clock.observeTime(frame.time),
      },
    });
    for (const stream of this.wantedStreams()) this.connection.follow(stream);
    for (const streams of this.wants.values()) for (const stream of streams) this.connection.follow(stream);
    // Every tab's persisted mutations: the tab that made them may be gone.
    for (const mutation of this.ownPending()) this.outbox.set(mutation.id, mutation);
    if (this.persist) for (const mutation of await this.persist.allPending()) if (!this.outbox.has(mutation.id)) this.outbox.set(mutation.id, mutation);
    this.connection.start();
    this.tabs.post({ t: "leader" });
  }

  /** @param {any} message */
  fromTab(message) {
    const leader = this.isLeader;
    switch (message.t) {
      case "hello":
      case "want":
        if (!leader) return;
        this.wants.set(message.tab, new Set([...(this.wants.get(message.tab) ?? []), ...message.streams]));
        for (const stream of message.streams) this.connection.follow(stream);
        for (const mutation of message.pending ?? []) this.enqueue(mutation);
        for (const [stream, state] of Object.entries(message.presence ?? {})) {
          this.presenceOut.set(stream, state);
          this.connection.presence(stream, state);
        }
        if (message.t === "hello") {
          this.tabs.post({ t: "status", status: this.status });
          for (const stream of message.streams) this.tabs.post({ t: "members", stream, members: Object.fromEntries(this.handleOf(stream).members) });
        }
        break;
      case "bye": {
        if (!leader) return;
        const streams = this.wants.get(message.tab) ?? new Set();
        this.wants.delete(message.tab);
        for (const stream of streams) if (!this.isWanted(stream)) this.connection.unfollow(stream);
        break;
      }
      case "mutate":
        if (leader) for (const mutation of message.mutations) this.enqueue(mutation);
        break;
      case "presence":
        if (leader) {
          this.presenceOut.set(message.stream, message.state);
          this.connection.presence(message.stream, message.state);
        }
        break;
      case "retry":
        if (leader) this.connection.retryNow();
        break;
      case "leader":
        if (!leader) this.hello();
        break;
      case "ops":
        if (!leader && this.streams.get(message.stream)?.wanted) this.receiveOps(message.stream, message.ops);
        break;
      case "snapshot":
        if (!leader && this.streams.get(message.stream)?.wanted) this.receiveSnapshot(message.stream, message.snapshot);
        break;
      case "reset":
        if (!leader && this.streams.get(message.stream)?.wanted) this.handleOf(message.stream).emit("reset", message.info);
        break;
      case "result":
        this.settle(message.result);
        break;
      case "status":
        if (!leader) this.setStatus(message.status);
        break;
      case "members":
        if (!leader && this.streams.has(message.stream)) this.receivePresence(message.stream, { members: message.members });
        break;
      case "auth":
        if (!leader) this.emit("auth", message.info);
        break;
      default:
        break;
    }
  }

  // -- streams ---------------------------------------------------------------------------

  /** @param {string} name */
  handleOf(name) {
    let handle = this.streams.get(name);
    if (!handle) {
      handle = new StreamHandle(this, name);
      this.streams.set(name, handle);
    }
    return handle;
  }

  wantedStreams() {
    return [...this.streams.values()].filter((handle) => handle.wanted).map((handle) => handle.name);
  }

  /** @param {string} stream */
  isWanted(stream) {
    if (this.streams.get(stream)?.wanted) return true;
    for (const streams of this.wants.values()) if (streams.has(stream)) return true;
    return false;
  }

  ownPending() {
    return [...this.streams.values()].flatMap((handle) => handle.state.pending);
  }

  /** @param {string} stream */
  want(stream) {
    if (this.isLeader) this.connection?.follow(stream);
    else this.tabs?.post({ t: "want", streams: [stream] });
  }

  /** @param {StreamHandle} handle */
  async restore(handle) {
    if (!this.persist || handle.restored) return;
    handle.restored = true;
    const saved = await this.persist.getStream(handle.name).catch(() => null);
    if (saved && saved.epoch && !handle.state.epoch) {
      handle.state.loadSnapshot(saved);
      handle.emit("change", { cause: "snapshot", ops: [] });
    }
  }

  /** @param {object} mutation a persisted pending mutation */
  adopt(mutation) {
    const state = this.handleOf(mutation.stream).state;
    if (!state.pending.some((pending) => pending.id === mutation.id)) state.addPending(mutation);
    this.made.set(mutation.id, mutation);
  }

  /**
   * @param {string} stream
   * @param {object[]} ops
   */
  receiveOps(stream, ops) {
    const handle = this.handleOf(stream);
    this.observeOps(ops);
    if (this.isLeader) this.tabs.post({ t: "ops", stream, ops });
    const held = this.catchingUp.get(stream);
    if (held) {
      held.push(...ops);
      return;
    }
    const waiting = handle.state.pending.length;
    const { applied, stop } = handle.state.applyOps(ops);
    if (handle.state.pending.length !== waiting) this.announce();
    if (applied.length) {
      this.scheduleSave(handle);
      for (const op of applied) handle.emit("op", op);
      handle.emit("change", { cause: "op", ops: applied });
    }
    if (stop) this.repair(stream, stop);
  }

  /**
   * Move this client's clock past the server time of every op it sees: an edit made
   * after seeing an op then wins over it under `lww`, even when this machine's clock is
   * behind (set back, or simply slow).
   * @param {object[]} ops
   */
  observeOps(ops) {
    for (const op of ops) this.clock.observeTime(op.ts);
  }

  /**
   * A gap or another epoch: the leader asks its transport again, a follower reads the log.
   * @param {string} stream
   * @param {"gap"|"epoch"} why
   */
  repair(stream, why) {
    const state = this.handleOf(stream).state;
    if (why === "epoch") {
      state.epoch = null;
      state.seq = 0;
    }
    if (this.isLeader) {
      if (this.resubscribing.has(stream)) return;
      this.resubscribing.add(stream);
      this.connection.resubscribe(stream);
    } else {
      this.catchUp(stream);
    }
  }

  /** A follower reads what it missed over HTTP: ops pages, or a snapshot after a reset. */
  async catchUp(stream) {
    if (this.catchingUp.has(stream)) return;
    const held = [];
    this.catchingUp.set(stream, held);
    const handle = this.handleOf(stream);
    try {
      for (;;) {
        const at = handle.position;
        if (!at) {
          handle.state.loadSnapshot(await fetchSnapshot(this.url, stream));
          continue;
        }
        const query = `?epoch=${encodeURIComponent(at.epoch)}&after=${at.seq}&limit=${CATCH_UP_PAGE}`;
        const { status, data } = await requestJSON(apiUrl(this.url, `api/streams/${encodeURIComponent(stream)}/ops/`) + query);
        if (status === 409) {
          handle.state.epoch = null;
          continue;
        }
        this.observeOps(data.ops);
        handle.state.applyOps(data.ops);
        if (data.ops.length < CATCH_UP_PAGE) break;
      }
    } catch (error) {
      this.emit("error", { code: "catch_up", message: String(error) });
    } finally {
      this.catchingUp.delete(stream);
    }
    handle.state.applyOps(held);
    this.scheduleSave(handle);
    handle.emit("change", { cause: "snapshot", ops: [] });
  }

  /**
   * @param {string} stream
   * @param {{epoch: string, seq: number, objects: object[]}} snapshot
   */
  receiveSnapshot(stream, snapshot) {
    const handle = this.handleOf(stream);
    if (this.isLeader) this.tabs.post({ t: "snapshot", stream, snapshot });
    handle.state.loadSnapshot(snapshot);
    this.resubscribing.delete(stream);
    this.scheduleSave(handle);
    handle.emit("change", { cause: "snapshot", ops: [] });
  }

  /**
   * @param {string} stream
   * @param {object} info
   */
  receiveReset(stream, info) {
    const handle = this.handleOf(stream);
    // The followers get the snapshot that follows from the leader; they hear why too.
    if (this.isLeader) this.tabs?.post({ t: "reset", stream, info });
    handle.emit("reset", info);
    handle.state.epoch = null;
    handle.state.seq = 0;
    this.resubscribing.delete(stream);
    this.repair(stream, "epoch");
  }

  /** @param {string} stream */
  subscribed(stream) {
    this.resubscribing.delete(stream);
    this.subscribeRefusals.delete(stream);
    const own = this.presenceOut.get(stream);
    if (own) this.connection.presence(stream, own);
  }

  /**
   * @param {string} stream
   * @param {{members?: object, joins?: object, leaves?: string[]}} change
   */
  receivePresence(stream, change) {
    const handle = this.handleOf(stream);
    if (change.members) handle.members = new Map(Object.entries(change.members));
    for (const [id, member] of Object.entries(change.joins ?? {})) handle.members.set(id, member);
    for (const id of change.leaves ?? []) handle.members.delete(id);
    if (this.isLeader) this.tabs.post({ t: "members", stream, members: Object.fromEntries(handle.members) });
    handle.emit("presence", { members: handle.presence.members() });
  }

  /**
   * @param {string} stream
   * @param {object} state
   */
  sendPresence(stream, state) {
    // Kept in every tab: a state set before a leader exists reaches it with hello().
    this.presenceOut.set(stream, state);
    if (this.isLeader) {
      this.connection?.presence(stream, state);
    } else {
      this.tabs?.post({ t: "presence", stream, state });
    }
  }

  /** @param {StreamHandle} handle */
  scheduleSave(handle) {
    if (!this.persist || this.saveTimers.has(handle.name)) return;
    this.saveTimers.set(
      handle.name,
      setTimeout(() => {
        this.saveTimers.delete(handle.name);
        const { epoch, seq } = handle.state;
        if (!epoch) return;
        const data = { epoch, seq, objects: [...handle.state.base.values()] };
        this.persist.putStream(handle.name, data).catch((error) => this.emit("error", { code: "persist", message: String(error) }));
      }, SAVE_DELAY_MS),
    );
  }

  // -- mutations (the leader sends them) ------------------------------------------------

  /** @param {object} mutation */
  enqueue(mutation) {
    if (!this.outbox.has(mutation.id)) this.outbox.set(mutation.id, mutation);
    if (this.connection?.state !== "live" || this.inflight.has(mutation.id) || this.waitsFor(mutation)) return;
    this.inflight.add(mutation.id);
    this.batcher.add(mutation);
  }

  /**
   * A version-checked mutation waits for the earlier mutations of the same object, so it
   * can be rebased on their results (see finish()) instead of conflicting with them.
   * Nothing overtakes a mutation that waits (or is not sent yet): the server applies
   * them in the order the page made them.
   * @param {object} mutation
   */
  waitsFor(mutation) {
    const versioned = mutation.base_version !== undefined && mutation.base_version !== null;
    for (const other of this.outbox.values()) {
      if (other.id === mutation.id) return false;
      if (!this.inflight.has(other.id)) return true;
      if (versioned && other.model === mutation.model && String(other.pk) === String(mutation.pk)) return true;
    }
    return false;
  }

  /** Send what is not in flight and not waiting. */
  pump() {
    for (const mutation of this.outbox.values()) this.enqueue(mutation);
  }

  flushOutbox() {
    this.inflight.clear();
    for (const mutation of this.outbox.values()) this.enqueue(mutation);
  }

  /** @param {object[]} batch */
  async sendBatch(batch) {
    let results;
    try {
      results = await this.connection.mutate(batch);
    } catch (error) {
      for (const mutation of batch) this.inflight.delete(mutation.id);
      if (error.kind === "unavailable" || error.code === "rate_limited") {
        setTimeout(() => this.flushOutbox(), error.retryAfterMs ?? RETRY_DELAY_MS);
      } else if (error.kind === "refused") {
        // The whole request was refused as malformed: find the culprit one by one.
        if (batch.length > 1) {
          for (const mutation of batch) {
            this.inflight.add(mutation.id);
            this.sendBatch([mutation]);
          }
        } else {
          const problem = error.problem ?? {};
          this.finish({ id: batch[0].id, status: "rejected", seq: null, version: null, object: null, error: { code: error.code ?? "invalid", message: problem.detail ?? error.message, fields: problem.fields ?? null } });
        }
      } else if (error.kind === "auth") {
        this.authNeeded({ status: error.status });
      }
      // "closed": they stay in the outbox and go again when the connection is back.
      return;
    }
    results.forEach((result, index) => {
      const mutation = batch[index];
      this.inflight.delete(mutation.id);
      if (result.error?.retry) {
        setTimeout(() => this.enqueue(mutation), RETRY_DELAY_MS);
        return;
      }
      this.finish(result);
    });
  }

  /** A final result: forget the mutation everywhere, tell every tab. */
  finish(result) {
    const done = this.outbox.get(result.id);
    this.outbox.delete(result.id);
    if (done && result.status === "applied" && typeof result.version === "number") this.rebase(done, result.version);
    this.persist?.deletePending(result.id).catch(() => {});
    this.tabs?.post({ t: "result", result });
    this.settle(result);
    // Mutations that waited for this one can go now.
    queueMicrotask(() => this.pump());
  }

  /**
   * Our mutation moved its object from `version - 1` to `version`. A later mutation of
   * ours based on `version - 1` saw everything but that change, which was ours: base it
   * on `version`, so it does not conflict with ourselves. (If anyone else had written in
   * between, the versions would not line up and the check stays.)
   * @param {object} done
   * @param {number} version
   */
  rebase(done, version) {
    for (const later of this.outbox.values()) {
      if (later.model !== done.model || String(later.pk) !== String(done.pk) || later.base_version !== version - 1) continue;
      later.base_version = version;
      this.persist?.putPending(later).catch(() => {});
    }
  }

  /** Apply a result to this tab's view and tell the page. */
  settle(result) {
    let mutation;
    let handle;
    for (const candidate of this.streams.values()) {
      mutation = candidate.state.resolve(result.id, result);
      if (mutation) {
        handle = candidate;
        break;
      }
    }
    // Its op may have come first and confirmed it already: the page still hears.
    const made = this.made.get(result.id);
    this.made.delete(result.id);
    if (!mutation && made) {
      mutation = made;
      handle = this.streams.get(made.stream);
    }
    const waiter = this.waiters.get(result.id);
    this.waiters.delete(result.id);
    waiter?.resolve(result);
    if (!mutation) return;
    this.scheduleSave(handle);
    handle.emit("change", { cause: "result", ops: [] });
    this.announce();
    if (result.status === "rejected" || result.status === "gone") {
      this.emit("rejected", { mutation, error: result.error ?? { code: "gone", message: "It was deleted." }, result });
    } else if (result.status === "conflict") {
      const fields = {};
      for (const [name, reasons] of Object.entries(result.error?.fields ?? {})) {
        fields[name] = { mine: mutation.fields?.[name], server: result.object?.fields?.[name], reason: [].concat(reasons).join(" ") };
      }
      this.emit("conflict", { mutation, result, fields });
    } else {
      this.emit("applied", { mutation, result });
    }
  }

  // -- status ----------------------------------------------------------------------------

  /** @param {object} status */
  setStatus(status) {
    const wasLive = this.status.state === "live";
    this.status = { ...this.status, ...status };
    if (wasLive && this.status.state !== "live") {
      // Without a connection nobody's presence is known: show no one rather than ghosts.
      for (const handle of this.streams.values()) {
        if (!handle.members.size) continue;
        handle.members = new Map();
        handle.emit("presence", { members: handle.presence.members() });
      }
    }
    if (this.isLeader) this.tabs?.post({ t: "status", status: this.status });
    this.announce();
    if (status.state !== "live" && this.pendingCount) this.requestBackgroundSync();
  }

  /** The status event, with the pending count as of now. */
  announce() {
    this.emit("status", { ...this.status, pending: this.pendingCount });
  }

  /** @param {object} info */
  authNeeded(info) {
    this.tabs?.post({ t: "auth", info });
    this.emit("auth", info);
  }

  /** @param {{code: string, message: string, stream?: string}} frame */
  serverError(frame) {
    if (frame.code === "not_authenticated" || frame.code === "permission_denied") this.authNeeded({ status: frame.code, stream: frame.stream });
    else if (frame.ref === SUBSCRIBE_REF && frame.stream && (frame.code === "rate_limited" || frame.code === "internal_error")) {
      // A transient refusal of a subscribe (the per-user read limit, a server fault): ask
      // again after the wait the server gave, else after a delay that doubles up to 30 s.
      const stream = frame.stream;
      const attempts = (this.subscribeRefusals.get(stream) ?? 0) + 1;
      this.subscribeRefusals.set(stream, attempts);
      const delay = frame.retry_after_ms ?? Math.min(30_000, 1000 * 2 ** (attempts - 1));
      setTimeout(() => this.connection?.resubscribe(stream), delay);
    } else this.emit("error", frame);
  }

  // -- page lifecycle, service worker ----------------------------------------------------

  /** `pagehide`: give up the connection and the lock so the page can enter the bfcache. */
  suspend() {
    if (!this.tabs) return;
    if (this.pendingCount) this.requestBackgroundSync();
    if (!this.isLeader) this.tabs.post({ t: "bye" });
    this.connection?.close();
    this.connection = null;
    this.tabs.stop();
    this.tabs = null;
    this.inflight.clear();
  }

  /** `pageshow` from the bfcache: take part again. */
  resume() {
    if (this.tabs || !this.started) return;
    this.joinTabs();
  }

  async registerServiceWorker() {
    const url = this.options.serviceWorker;
    const container = globalThis.navigator?.serviceWorker;
    if (!url || !container) return;
    try {
      await container.register(url, { scope: "/" });
      const registration = await container.ready;
      // The page and what it loaded, so that a reload without network finds them.
      const api = new URL(this.url, location.href).href;
      const shell = [location.href, ...performance.getEntriesByType("resource").map((entry) => entry.name)].filter(
        (href) => href.startsWith(location.origin) && !href.startsWith(api),
      );
      registration.active?.postMessage({ type: "syncapp-config", url: api, clientId: this.clientId, csrfToken: csrfToken(), dbName: this.options.dbName, shell });
      this.swRegistration = registration;
    } catch (error) {
      this.emit("error", { code: "service_worker", message: String(error) });
    }
  }

  /** Ask the service worker to send the queue when the network is back, page or not. */
  requestBackgroundSync() {
    this.swRegistration?.sync?.register(SYNC_TAG).catch(() => {});
  }
}
