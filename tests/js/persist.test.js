import {
  MemoryPersist,
  PersistQuotaError,
  isQuotaError,
  openPersist,
} from "../../syncapp/static/syncapp/persist.js";
import { eq, ok, rejects, skip, test } from "./harness.js";

const HAS_INDEXEDDB = typeof indexedDB !== "undefined";
const NEEDS_INDEXEDDB = HAS_INDEXEDDB ? null : "needs IndexedDB (runs in the browser)";

let databases = 0;

/** A database name of its own for each test. */
function freshName() {
  databases += 1;
  return `syncapp-test-${Date.now()}-${databases}-${Math.random().toString(36).slice(2)}`;
}

/** @param {string} name */
function deleteDatabase(name) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.deleteDatabase(name);
    request.onsuccess = () => resolve(undefined);
    request.onerror = () => reject(request.error);
    request.onblocked = () => resolve(undefined);
  });
}

function quotaError() {
  return new DOMException("The quota has been exceeded.", "QuotaExceededError");
}

/**
 * A disk that fills up on demand: its `guard` refuses the next `failures` writes with a
 * QuotaExceededError (`Infinity`: it stays full), or throws `error` on every write.
 */
function fakeDisk() {
  const disk = {
    failures: 0,
    /** @type {Error | null} */
    error: null,
    /** @type {number[]} The sizes the guard was asked about. */
    sizes: [],
    /** @param {number} bytes */
    guard(bytes) {
      disk.sizes.push(bytes);
      if (disk.error) throw disk.error;
      if (disk.failures > 0) {
        disk.failures -= 1;
        throw quotaError();
      }
    },
  };
  return disk;
}

/** @param {string} id @param {object} [fields] */
function mutation(id, fields = {}) {
  return { id, stream: "s", model: "todos.todo", pk: id, op: "update", fields };
}

/**
 * The same tests for both backends.
 *
 * @param {string} backend
 * @param {string | null} skipReason
 * @param {(options: object) => Promise<{store: any, cleanup: () => Promise<void>}>} open
 */
function contract(backend, skipReason, open) {
  /**
   * @param {string} name
   * @param {(store: any, disk: ReturnType<typeof fakeDisk>) => Promise<void>} fn
   */
  function persistTest(name, fn) {
    test(
      `persist (${backend}): ${name}`,
      async () => {
        const disk = fakeDisk();
        const { store, cleanup } = await open({ quotaGuard: disk.guard });
        try {
          eq(store.backend, backend);
          await fn(store, disk);
        } finally {
          await cleanup();
        }
      },
      { skip: skipReason },
    );
  }

  persistTest("pending mutations round trip", async (store) => {
    eq(await store.allPending(), []);
    await store.putPending(mutation("a", { title: "x" }));
    await store.putPending(mutation("b"));
    eq(await store.allPending(), [mutation("a", { title: "x" }), mutation("b")]);
    await store.deletePending("a");
    await store.deletePending("never-there");
    eq(await store.allPending(), [mutation("b")]);
  });

  persistTest("allPending() is in insertion order; a re-put keeps its place", async (store) => {
    for (const id of ["m3", "m1", "m2", "m0"]) await store.putPending(mutation(id));
    await store.putPending(mutation("m1", { retried: true }));
    await store.deletePending("m2");
    await store.putPending(mutation("m2"));
    const queue = await store.allPending();
    eq(queue.map((/** @type {{id: string}} */ m) => m.id), ["m3", "m1", "m0", "m2"]);
    eq(queue[1].fields, { retried: true });
  });

  persistTest("streams round trip", async (store) => {
    eq(await store.getStream("todos.list:1"), undefined);
    const data = { stream: "todos.list:1", epoch: "e", seq: 3, base: [], pending: [] };
    await store.putStream("todos.list:1", data);
    await store.putStream("todos.list:2", { seq: 1 });
    eq(await store.getStream("todos.list:1"), data);
    eq(await store.streams(), ["todos.list:1", "todos.list:2"]);
    await store.putStream("todos.list:1", { seq: 4 });
    eq(await store.getStream("todos.list:1"), { seq: 4 });
    await store.deleteStream("todos.list:1");
    eq(await store.streams(), ["todos.list:2"]);
    eq(await store.getStream("todos.list:1"), undefined);
  });

  persistTest("stores copies, not references", async (store) => {
    const data = { seq: 1, nested: { title: "x" } };
    await store.putStream("s", data);
    data.nested.title = "changed";
    const read = await store.getStream("s");
    eq(read, { seq: 1, nested: { title: "x" } });
    read.seq = 99;
    eq((await store.getStream("s")).seq, 1);
  });

  persistTest("the quota guard sees every write with its size", async (store, disk) => {
    await store.putStream("s", { seq: 1 });
    await store.putPending(mutation("a"));
    eq(disk.sizes.length, 2);
    ok(disk.sizes[0] >= JSON.stringify({ seq: 1 }).length, `size ${disk.sizes[0]}`);
  });

  persistTest(
    "a full disk evicts the least recently written streams, then the write succeeds",
    async (store, disk) => {
      await store.putPending(mutation("p1"));
      await store.putStream("a", { n: 1 });
      await store.putStream("b", { n: 2 });
      await store.putStream("c", { n: 3 });
      await store.putStream("a", { n: 4 });
      disk.failures = 2;
      await store.putStream("d", { n: 5 });
      eq(disk.failures, 0);
      eq(await store.streams(), ["a", "d"], "b and c were the least recently written");
      eq(await store.getStream("a"), { n: 4 });
      eq(await store.getStream("d"), { n: 5 });
      eq(await store.allPending(), [mutation("p1")]);
    },
  );

  persistTest(
    "a full disk while queueing a mutation evicts streams, never pending mutations",
    async (store, disk) => {
      await store.putPending(mutation("p1"));
      await store.putStream("a", { n: 1 });
      await store.putStream("b", { n: 2 });
      disk.failures = 1;
      await store.putPending(mutation("p2"));
      eq(await store.streams(), ["b"]);
      eq(await store.allPending(), [mutation("p1"), mutation("p2")]);
    },
  );

  persistTest(
    "PersistQuotaError once no stream is left to evict; pending mutations stay",
    async (store, disk) => {
      await store.putPending(mutation("p1"));
      await store.putStream("a", { n: 1 });
      await store.putStream("b", { n: 2 });
      disk.failures = Infinity;
      const error = await rejects(store.putPending(mutation("p2")), PersistQuotaError);
      ok(isQuotaError(/** @type {Error} */ (error).cause), "the browser's error is the cause");
      eq(await store.streams(), []);
      await rejects(store.putStream("c", { n: 3 }), PersistQuotaError);
      eq(await store.allPending(), [mutation("p1")], "p1 was kept, p2 was not written");
      await store.deletePending("p1");
      eq(await store.allPending(), [], "deletes still work on a full disk");
    },
  );

  persistTest(
    "other errors are not quota errors: no eviction, the error comes through",
    async (store, disk) => {
      await store.putStream("a", { n: 1 });
      disk.error = new TypeError("not a quota problem");
      await rejects(store.putStream("b", { n: 2 }), TypeError);
      eq(await store.streams(), ["a"]);
    },
  );
}

contract("memory", null, async (options) => ({
  store: new MemoryPersist(options),
  cleanup: async () => {},
}));

contract("indexeddb", NEEDS_INDEXEDDB, async (options) => {
  const name = freshName();
  const store = await openPersist(name, options);
  return {
    store,
    cleanup: async () => {
      store.close();
      await deleteDatabase(name);
    },
  };
});

test("openPersist: memory where there is no IndexedDB", async () => {
  const store = await openPersist("syncapp", { indexedDB: null });
  eq(store.backend, "memory");
  ok(store instanceof MemoryPersist);
  await store.putPending(mutation("a"));
  eq(await store.allPending(), [mutation("a")]);
  store.close();
});

test("openPersist: memory when opening IndexedDB throws", async () => {
  const broken = {
    open() {
      throw new DOMException("The operation is insecure.", "SecurityError");
    },
  };
  const factory = /** @type {IDBFactory} */ (/** @type {unknown} */ (broken));
  const store = await quietly(() => openPersist("syncapp", { indexedDB: factory }));
  eq(store.backend, "memory");
});

test("openPersist: memory when the open request fails", async () => {
  const failing = {
    open() {
      const request = { error: new DOMException("No.", "UnknownError"), onerror: null };
      setTimeout(() => request.onerror?.());
      return request;
    },
  };
  const factory = /** @type {IDBFactory} */ (/** @type {unknown} */ (failing));
  const store = await quietly(() => openPersist("syncapp", { indexedDB: factory }));
  eq(store.backend, "memory");
});

test("openPersist: IndexedDB by default in the browser", async () => {
  if (!HAS_INDEXEDDB) skip("needs IndexedDB (runs in the browser)");
  const name = freshName();
  const store = await openPersist(name);
  try {
    eq(store.backend, "indexeddb");
  } finally {
    store.close();
    await deleteDatabase(name);
  }
});

test(
  "persist (indexeddb): survives closing and reopening; the queue order continues",
  async () => {
    const name = freshName();
    const first = await openPersist(name);
    await first.putPending(mutation("z"));
    await first.putPending(mutation("y"));
    await first.putStream("s", { seq: 7 });
    first.close();
    const second = await openPersist(name);
    try {
      await second.putPending(mutation("a"));
      eq((await second.allPending()).map((/** @type {{id: string}} */ m) => m.id), ["z", "y", "a"]);
      eq(await second.getStream("s"), { seq: 7 });
    } finally {
      second.close();
      await deleteDatabase(name);
    }
  },
  { skip: NEEDS_INDEXEDDB },
);

test(
  "persist (indexeddb): the database has the pending, streams and meta stores",
  async () => {
    const name = freshName();
    const store = await openPersist(name);
    store.close();
    /** @type {IDBDatabase} */
    const db = await new Promise((resolve, reject) => {
      const request = indexedDB.open(name);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    try {
      eq(Array.from(db.objectStoreNames).sort(), ["meta", "pending", "streams"]);
      const tx = db.transaction(["pending", "streams"]);
      eq(tx.objectStore("pending").keyPath, "id");
      eq(tx.objectStore("streams").keyPath, "stream");
      eq(Array.from(tx.objectStore("streams").indexNames), ["written"]);
    } finally {
      db.close();
      await deleteDatabase(name);
    }
  },
  { skip: NEEDS_INDEXEDDB },
);

test("isQuotaError: by name", () => {
  ok(isQuotaError(quotaError()));
  ok(isQuotaError({ name: "NS_ERROR_DOM_QUOTA_REACHED" }));
  ok(!isQuotaError(new TypeError("x")));
  ok(!isQuotaError(null));
  ok(!isQuotaError(undefined));
});

test("PersistQuotaError: an Error with a name and a cause", () => {
  const cause = quotaError();
  const error = new PersistQuotaError(undefined, { cause });
  ok(error instanceof Error);
  eq(error.name, "PersistQuotaError");
  eq(error.cause, cause);
  ok(/full/.test(error.message));
});

/**
 * Run `fn` with console.warn silenced (the fallback warns, on purpose).
 *
 * @template T
 * @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 */
async function quietly(fn) {
  const warn = console.warn;
  console.warn = () => {};
  try {
    return await fn();
  } finally {
    console.warn = warn;
  }
}
