/**
 * What survives a reload: the queue of pending mutations and the last state of each
 * stream, in IndexedDB, or in memory where IndexedDB is missing or will not open.
 *
 * Cached streams are a cache: when the browser refuses a write for lack of space, the
 * least recently written streams are evicted one at a time and the write is retried.
 * Pending mutations are the user's work and are never evicted.
 *
 * @module persist
 */

/** The schema version of the database. */
export const DB_VERSION = 1;

const PENDING = "pending";
const STREAMS = "streams";
const META = "meta";
/** The key in `meta` of the last insertion number handed to a pending mutation. */
const PENDING_COUNTER = "pendingCounter";

/** A write failed for lack of space, and no cached stream was left to evict. */
export class PersistQuotaError extends Error {
  /**
   * @param {string} [message]
   * @param {{cause?: unknown}} [options]
   */
  constructor(message = "Storage is full: nothing is left to evict.", options = undefined) {
    super(message, options);
    this.name = "PersistQuotaError";
  }
}

/**
 * Whether `error` is the browser's "storage is full".
 *
 * @param {unknown} error
 * @returns {boolean}
 */
export function isQuotaError(error) {
  const name = /** @type {{name?: unknown} | null} */ (error)?.name;
  // Old Firefox names it differently.
  return name === "QuotaExceededError" || name === "NS_ERROR_DOM_QUOTA_REACHED";
}

/**
 * @typedef {object} Persist
 * @property {"indexeddb" | "memory"} backend Where the data goes.
 * @property {(mutation: {id: string}) => Promise<void>} putPending Add a mutation to the
 *   queue, or replace the one with its id (which keeps its place).
 * @property {(id: string) => Promise<void>} deletePending
 * @property {() => Promise<any[]>} allPending The queue, in insertion order.
 * @property {(stream: string, data: unknown) => Promise<void>} putStream
 * @property {(stream: string) => Promise<any>} getStream The data, or `undefined`.
 * @property {(stream: string) => Promise<void>} deleteStream
 * @property {() => Promise<string[]>} streams The names of the cached streams.
 * @property {() => void} close
 */

/**
 * @typedef {object} PersistOptions
 * @property {IDBFactory | null} [indexedDB] Defaults to `globalThis.indexedDB`; `null`
 *   keeps everything in memory.
 * @property {(bytes: number) => void} [quotaGuard] Called at the start of every write
 *   with the rough size of what it writes. A `QuotaExceededError` thrown here is handled
 *   like the browser's own: tests simulate a full disk this way.
 */

/**
 * The rough size of `value` once stored.
 *
 * @param {unknown} value
 * @returns {number}
 */
function approximateBytes(value) {
  try {
    return JSON.stringify(value)?.length ?? 0;
  } catch {
    return 0;
  }
}

/**
 * Run `write`; while it fails for lack of space, evict the least recently written
 * stream and run it again.
 *
 * @template T
 * @param {() => Promise<T>} write
 * @param {() => Promise<string | null>} evictOldest The evicted stream, `null` if none.
 * @returns {Promise<T>}
 */
async function withEviction(write, evictOldest) {
  for (;;) {
    try {
      return await write();
    } catch (error) {
      if (!isQuotaError(error)) throw error;
      if ((await evictOldest()) === null) {
        throw new PersistQuotaError(undefined, { cause: error });
      }
    }
  }
}

/**
 * A deep copy, as IndexedDB stores it.
 *
 * @template T
 * @param {T} value
 * @returns {T}
 */
function copy(value) {
  return value === undefined ? value : structuredClone(value);
}

/** The same interface as the IndexedDB store, in memory: for a page without one. */
export class MemoryPersist {
  /** @type {"indexeddb" | "memory"} */
  backend = "memory";
  /** @type {Map<string, any>} Insertion order is the queue's order. */
  #pending = new Map();
  /** @type {Map<string, {data: unknown, written: number}>} */
  #streams = new Map();
  #writes = 0;
  #quotaGuard;

  /** @param {Pick<PersistOptions, "quotaGuard">} [options] */
  constructor({ quotaGuard } = {}) {
    this.#quotaGuard = quotaGuard;
  }

  /** @param {{id: string}} mutation */
  async putPending(mutation) {
    await this.#write(() => this.#pending.set(mutation.id, copy(mutation)), mutation);
  }

  /** @param {string} id */
  async deletePending(id) {
    await this.#write(() => this.#pending.delete(id));
  }

  async allPending() {
    return [...this.#pending.values()].map(copy);
  }

  /**
   * @param {string} stream
   * @param {unknown} data
   */
  async putStream(stream, data) {
    await this.#write(() => {
      this.#writes += 1;
      this.#streams.set(stream, { data: copy(data), written: this.#writes });
    }, data);
  }

  /** @param {string} stream */
  async getStream(stream) {
    return copy(this.#streams.get(stream)?.data);
  }

  /** @param {string} stream */
  async deleteStream(stream) {
    await this.#write(() => this.#streams.delete(stream));
  }

  async streams() {
    return [...this.#streams.keys()].sort();
  }

  close() {}

  /**
   * @param {() => void} apply
   * @param {unknown} [stored] What the write stores, for the quota guard; deletes
   *   store nothing and are not checked.
   */
  #write(apply, stored = undefined) {
    const attempt = async () => {
      if (stored !== undefined) this.#quotaGuard?.(approximateBytes(stored));
      apply();
    };
    return withEviction(attempt, async () => this.#evictOldest());
  }

  #evictOldest() {
    let oldest = null;
    let oldestWritten = Infinity;
    for (const [stream, { written }] of this.#streams) {
      if (written < oldestWritten) [oldest, oldestWritten] = [stream, written];
    }
    if (oldest !== null) this.#streams.delete(oldest);
    return oldest;
  }
}

/**
 * Run `body` in a transaction and resolve once it commits, with the `result` of what
 * `body` returned (an `IDBRequest`, or an object it fills in); reject with why it aborted.
 *
 * @param {IDBDatabase} db
 * @param {string | string[]} storeNames
 * @param {IDBTransactionMode} mode
 * @param {(tx: IDBTransaction) => {result?: any} | void} body
 * @returns {Promise<any>}
 */
function transact(db, storeNames, mode, body) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(storeNames, mode);
    /** @type {unknown} */
    let failure = null;
    /** @type {{result?: any} | undefined} */
    let outcome;
    tx.oncomplete = () => resolve(outcome?.result);
    tx.onabort = () => reject(failure ?? tx.error ?? new DOMException("Aborted.", "AbortError"));
    try {
      outcome = /** @type {{result?: any} | undefined} */ (body(tx));
    } catch (error) {
      failure = error;
      tx.abort();
    }
  });
}

/**
 * Open (creating or upgrading) the database.
 *
 * @param {IDBFactory} factory
 * @param {string} name
 * @returns {Promise<IDBDatabase>}
 */
function openDatabase(factory, name) {
  return new Promise((resolve, reject) => {
    const request = factory.open(name, DB_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(PENDING)) {
        // {id, order, mutation}: `order` is the insertion number from `meta`.
        db.createObjectStore(PENDING, { keyPath: "id" }).createIndex("order", "order");
      }
      if (!db.objectStoreNames.contains(STREAMS)) {
        // {stream, written, data}: `written` orders the eviction.
        db.createObjectStore(STREAMS, { keyPath: "stream" }).createIndex("written", "written");
      }
      if (!db.objectStoreNames.contains(META)) db.createObjectStore(META);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** The store in IndexedDB. */
class IndexedDBPersist {
  /** @type {"indexeddb" | "memory"} */
  backend = "indexeddb";
  #db;
  #quotaGuard;
  #lastWritten = 0;

  /**
   * @param {IDBDatabase} db
   * @param {Pick<PersistOptions, "quotaGuard">} options
   */
  constructor(db, { quotaGuard }) {
    this.#db = db;
    this.#quotaGuard = quotaGuard;
    // Let another tab upgrade the schema instead of blocking it.
    db.onversionchange = () => db.close();
  }

  /** @param {{id: string}} mutation */
  async putPending(mutation) {
    await this.#write([PENDING, META], mutation, (tx) => {
      const pending = tx.objectStore(PENDING);
      const meta = tx.objectStore(META);
      const existing = pending.get(mutation.id);
      existing.onsuccess = () => {
        if (existing.result) {
          pending.put({ ...existing.result, mutation });
          return;
        }
        // Read and bump the counter in this transaction: tabs writing at once queue up.
        const counter = meta.get(PENDING_COUNTER);
        counter.onsuccess = () => {
          const order = (counter.result ?? 0) + 1;
          meta.put(order, PENDING_COUNTER);
          pending.put({ id: mutation.id, order, mutation });
        };
      };
    });
  }

  /** @param {string} id */
  async deletePending(id) {
    await this.#write(PENDING, undefined, (tx) => {
      tx.objectStore(PENDING).delete(id);
    });
  }

  async allPending() {
    const records = await transact(this.#db, PENDING, "readonly", (tx) =>
      tx.objectStore(PENDING).index("order").getAll(),
    );
    return records.map((/** @type {{mutation: unknown}} */ record) => record.mutation);
  }

  /**
   * @param {string} stream
   * @param {unknown} data
   */
  async putStream(stream, data) {
    await this.#write(STREAMS, data, (tx) => {
      tx.objectStore(STREAMS).put({ stream, written: this.#stamp(), data });
    });
  }

  /** @param {string} stream */
  async getStream(stream) {
    const record = await transact(this.#db, STREAMS, "readonly", (tx) =>
      tx.objectStore(STREAMS).get(stream),
    );
    return record?.data;
  }

  /** @param {string} stream */
  async deleteStream(stream) {
    await this.#write(STREAMS, undefined, (tx) => {
      tx.objectStore(STREAMS).delete(stream);
    });
  }

  /** @returns {Promise<string[]>} */
  async streams() {
    return transact(this.#db, STREAMS, "readonly", (tx) => tx.objectStore(STREAMS).getAllKeys());
  }

  close() {
    this.#db.close();
  }

  /**
   * A `written` time: milliseconds, made strictly increasing so that writes within one
   * millisecond keep their order.
   */
  #stamp() {
    this.#lastWritten = Math.max(Date.now(), this.#lastWritten + 1);
    return this.#lastWritten;
  }

  /**
   * @param {string | string[]} storeNames
   * @param {unknown} stored What the write stores, for the quota guard; deletes store
   *   nothing (`undefined`) and are not checked.
   * @param {(tx: IDBTransaction) => void} body
   */
  #write(storeNames, stored, body) {
    const attempt = () =>
      transact(this.#db, storeNames, "readwrite", (tx) => {
        if (stored !== undefined) this.#quotaGuard?.(approximateBytes(stored));
        body(tx);
      });
    return withEviction(attempt, () => this.#evictOldest());
  }

  /** @returns {Promise<string | null>} */
  #evictOldest() {
    return transact(this.#db, STREAMS, "readwrite", (tx) => {
      const evicted = { result: /** @type {string | null} */ (null) };
      const cursor = tx.objectStore(STREAMS).index("written").openCursor();
      cursor.onsuccess = () => {
        if (!cursor.result) return;
        evicted.result = /** @type {string} */ (cursor.result.primaryKey);
        cursor.result.delete();
      };
      return evicted;
    });
  }
}

/**
 * Open the store named `name`: IndexedDB where the page has it, else memory.
 *
 * @param {string} [name="syncapp"] The database name.
 * @param {PersistOptions} [options]
 * @returns {Promise<Persist>}
 */
export async function openPersist(name = "syncapp", options = {}) {
  const { indexedDB: factory = globalThis.indexedDB, quotaGuard } = options;
  if (!factory) return new MemoryPersist({ quotaGuard });
  try {
    return new IndexedDBPersist(await openDatabase(factory, name), { quotaGuard });
  } catch (error) {
    // Private modes and locked-down browsers refuse IndexedDB: carry on without it.
    console.warn(`syncapp: IndexedDB "${name}" did not open; keeping state in memory.`, error);
    return new MemoryPersist({ quotaGuard });
  }
}
