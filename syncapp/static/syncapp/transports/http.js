// HTTP requests to syncapp's API: CSRF, problem+json, Retry-After, typed failures.

import { parseRetryAfter } from "../backoff.js";
import { TransportError } from "./errors.js";

/** Django's CSRF token from the `csrftoken` cookie, or "". */
export function csrfToken() {
  const match = (globalThis.document?.cookie ?? "").match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/**
 * An absolute URL for `path` under the API base `url` ("/sync/").
 * @param {string} url
 * @param {string} path
 */
export function apiUrl(url, path) {
  return url.replace(/\/?$/, "/") + path;
}

/**
 * Fetch JSON; resolve with `{status, data}` for 2xx and 409 (reset answers), throw a
 * {@link TransportError} otherwise.
 * @param {string} url
 * @param {{method?: string, body?: any, signal?: AbortSignal, headers?: Record<string, string>, fetchImpl?: typeof fetch}} [options]
 */
export async function requestJSON(url, { method = "GET", body, signal, headers = {}, fetchImpl = globalThis.fetch } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", ...headers },
    signal,
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRFToken"] = csrfToken();
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetchImpl(url, init);
  } catch (error) {
    if (error && error.name === "AbortError") throw error;
    throw new TransportError("network", `no answer from ${url}: ${error}`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.ok || (response.status === 409 && data && data.type === "reset")) {
    return { status: response.status, data };
  }
  const retryAfterMs = parseRetryAfter(response.headers.get("Retry-After"));
  const extra = { status: response.status, code: data?.code, retryAfterMs, problem: data };
  const detail = data?.detail || response.statusText || `HTTP ${response.status}`;
  if (response.status === 401 || response.status === 403) {
    throw new TransportError("auth", detail, extra);
  }
  if (response.status === 429 || response.status >= 500 || data?.code === "in_progress") {
    throw new TransportError("unavailable", detail, extra);
  }
  throw new TransportError("refused", detail, extra);
}

/**
 * Load a stream's snapshot.
 * @param {string} url
 * @param {string} stream
 * @param {AbortSignal} [signal]
 */
export async function fetchSnapshot(url, stream, signal) {
  const { data } = await requestJSON(apiUrl(url, `api/streams/${encodeURIComponent(stream)}/snapshot/`), { signal });
  return data;
}

/**
 * Send mutations over HTTP; resolve with their results.
 * @param {string} url
 * @param {string} clientId
 * @param {object[]} mutations
 */
export async function postMutations(url, clientId, mutations) {
  const { data } = await requestJSON(apiUrl(url, "api/mutations/"), {
    method: "POST",
    body: { client_id: clientId, mutations },
  });
  return data.results;
}

/**
 * Is the server there? Any HTTP answer says yes; the status says whether we may read.
 * @param {string} url
 * @param {string} stream
 * @returns {Promise<{up: boolean, status: number|null}>}
 */
export async function probe(url, stream = "syncapp.probe") {
  try {
    const response = await fetch(apiUrl(url, `api/streams/${encodeURIComponent(stream)}/ops/?limit=1`), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    });
    return { up: true, status: response.status };
  } catch {
    return { up: false, status: null };
  }
}

/**
 * What the SSE and long-poll transports share: one reader per followed stream (stopped
 * with its `stop()`), mutations over `POST api/mutations/`, no presence, and one way to
 * fail: stop every reader and report the close once.
 */
export class HttpTransport {
  /**
   * @param {string} name
   * @param {{url: string, clientId: string, handlers: import("./errors.js").TransportHandlers}} options
   */
  constructor(name, { url, clientId, handlers }) {
    this.name = name;
    this.url = url;
    this.clientId = clientId;
    this.handlers = handlers;
    /** @type {Map<string, {stop: () => void}>} the reader of each followed stream */
    this.readers = new Map();
    this.closed = false;
    this.connectionId = null;
  }

  /** @param {string} stream */
  unsubscribe(stream) {
    this.readers.get(stream)?.stop();
    this.readers.delete(stream);
  }

  /** @param {object[]} mutations */
  mutate(mutations) {
    return postMutations(this.url, this.clientId, mutations);
  }

  presence() {}

  get supportsPresence() {
    return false;
  }

  /** @param {TransportError} error */
  fail(error) {
    if (this.closed) return;
    this.close();
    this.handlers.onClose({
      code: this.name,
      auth: error.kind === "auth",
      fatal: false,
      reason: error.message,
      retryAfterMs: error.retryAfterMs ?? null,
    });
  }

  close() {
    this.closed = true;
    for (const stream of [...this.readers.keys()]) this.unsubscribe(stream);
  }
}
