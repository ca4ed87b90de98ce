// syncapp's service worker: serve the pages and static files that were seen when the
// network is gone (so a page reloaded offline comes back, with its state and pending
// edits from IndexedDB), and, where the browser has Background Sync, send the pending
// queue when the network returns even if no page is open.
//
// Serve it from the site root with `syncapp.views.service_worker` (`path("sw.js", ...)`)
// and pass that URL as `new SyncClient({serviceWorker: "/sw.js"})`.

const SHELL = "syncapp-shell-v1";
const CONFIG = "syncapp-config-v1";
const CONFIG_KEY = "/__syncapp_config__";
const SYNC_TAG = "syncapp-flush";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("message", (event) => {
  const data = event.data ?? {};
  if (data.type === "syncapp-config") {
    const { shell = [], ...config } = data;
    event.waitUntil(
      Promise.all([
        caches.open(CONFIG).then((cache) => cache.put(CONFIG_KEY, new Response(JSON.stringify(config), { headers: { "Content-Type": "application/json" } }))),
        // The page was loaded before this worker controlled it: keep what it loaded.
        caches.open(SHELL).then((cache) => Promise.all(shell.map((url) => cache.add(url).catch(() => {})))),
      ]),
    );
  } else if (data.type === "syncapp-flush") {
    event.waitUntil(flush().then((sent) => event.source?.postMessage({ type: "syncapp-flushed", sent })));
  }
});

self.addEventListener("sync", (event) => {
  if (event.tag === SYNC_TAG) event.waitUntil(flush());
});

/** Is this a request the app shell cache should answer when offline? */
function cacheable(request, config) {
  if (request.method !== "GET") return false;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return false;
  // The API is the client's business (IndexedDB keeps its state); never cache it.
  if (config && url.href.startsWith(config.url)) return false;
  if (url.pathname.includes("/api/") || request.headers.get("Accept")?.includes("text/event-stream")) return false;
  return request.mode === "navigate" || url.pathname.includes("/static/");
}

self.addEventListener("fetch", (event) => {
  event.respondWith(
    (async () => {
      const config = await readConfig();
      if (!cacheable(event.request, config)) return fetch(event.request);
      const cache = await caches.open(SHELL);
      try {
        // Network first: pages and scripts are never stale while online.
        const response = await fetch(event.request);
        if (response.ok && !response.redirected) await cache.put(event.request, response.clone());
        return response;
      } catch (error) {
        const cached = await cache.match(event.request, { ignoreVary: true });
        if (cached) return cached;
        throw error;
      }
    })(),
  );
});

async function readConfig() {
  const response = await (await caches.open(CONFIG)).match(CONFIG_KEY);
  return response ? response.json() : null;
}

/** @param {string} name */
function openDatabase(name) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(name);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** @param {IDBRequest} request */
function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/**
 * Send every pending mutation in IndexedDB; forget those with a final answer.
 * @returns {Promise<number>} how many got a final answer
 */
async function flush() {
  const config = await readConfig();
  if (!config) return 0;
  const db = await openDatabase(config.dbName || "syncapp");
  try {
    if (!db.objectStoreNames.contains("pending")) return 0;
    const records = await done(db.transaction("pending").objectStore("pending").getAll());
    // Records are {id, order, mutation} (persist.js), sent in the order they were made.
    const mutations = records
      .sort((a, b) => (a.order ?? 0) - (b.order ?? 0))
      .map((record) => record.mutation)
      .filter((mutation) => mutation && mutation.id);
    let sent = 0;
    for (let start = 0; start < mutations.length; start += 100) {
      const batch = mutations.slice(start, start + 100);
      const token = (await self.cookieStore?.get("csrftoken").catch(() => null))?.value ?? config.csrfToken;
      const response = await fetch(new URL("api/mutations/", config.url), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": token },
        body: JSON.stringify({ client_id: config.clientId, mutations: batch }),
      });
      if (!response.ok) throw new Error(`mutations answered ${response.status}`); // Background Sync retries
      const { results } = await response.json();
      const store = db.transaction("pending", "readwrite").objectStore("pending");
      for (const result of results) {
        if (result.error?.retry) continue;
        store.delete(result.id);
        sent += 1;
      }
    }
    return sent;
  } finally {
    db.close();
  }
}
