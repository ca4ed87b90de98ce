// The SSE transport: one EventSource per stream (django-eventstream at
// `<url>api/streams/<stream>/events/`), mutations over POST.
//
// Ids are `<stream>:<seq>`, so the browser's own reconnects resume from the log; but a
// failing EventSource is closed and reported, and the connection decides what next.

import { TransportError } from "./errors.js";
import { HttpTransport, apiUrl, fetchSnapshot } from "./http.js";

const OPEN_TIMEOUT_MS = 8000;

export class SSETransport extends HttpTransport {
  /**
   * @param {{url: string, clientId: string, handlers: import("./errors.js").TransportHandlers,
   *          EventSourceImpl?: typeof EventSource}} options
   */
  constructor({ EventSourceImpl = globalThis.EventSource, ...options }) {
    super("sse", options);
    this.EventSourceImpl = EventSourceImpl;
  }

  /**
   * SSE has nothing to open until a stream is followed; `subscribe()` reports failures.
   * @returns {Promise<void>}
   */
  async open() {
    if (typeof this.EventSourceImpl !== "function") {
      throw new TransportError("blocked", "EventSource is not available");
    }
  }

  /**
   * Follow `stream` from `position`, loading a snapshot first when there is none.
   * Resolves once the event stream is open.
   * @param {string} stream
   * @param {{epoch: string, seq: number}|null} position
   */
  async subscribe(stream, position) {
    this.unsubscribe(stream);
    const abort = new AbortController();
    /** @type {{source: EventSource|null, stop: () => void}} */
    const entry = {
      source: null,
      stop: () => {
        abort.abort();
        entry.source?.close();
      },
    };
    this.readers.set(stream, entry);
    let seq = position?.seq ?? null;
    if (!position || !position.epoch) {
      let snapshot;
      try {
        snapshot = await fetchSnapshot(this.url, stream, abort.signal);
      } catch (error) {
        if (error.name === "AbortError") return;
        this.fail(error);
        return;
      }
      if (abort.signal.aborted) return;
      this.handlers.onSnapshot(stream, snapshot);
      seq = snapshot.seq;
    }
    const query = `?lastEventId=${encodeURIComponent(`${stream}:${seq}`)}`;
    const source = new this.EventSourceImpl(apiUrl(this.url, `api/streams/${encodeURIComponent(stream)}/events/`) + query, {
      withCredentials: true,
    });
    entry.source = source;
    let opened = false;
    const timeout = setTimeout(() => {
      if (!opened) this.fail(new TransportError("timeout", `events of ${stream} did not open`));
    }, OPEN_TIMEOUT_MS);
    source.onopen = () => {
      opened = true;
      clearTimeout(timeout);
      this.handlers.onSubscribed?.(stream, { epoch: position?.epoch ?? "", head: seq ?? 0 });
    };
    source.onmessage = (event) => {
      let op;
      try {
        op = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handlers.onOps(stream, [op]);
    };
    source.addEventListener("stream-reset", () => {
      source.close();
      this.handlers.onReset(stream, { reason: "stream-reset" });
    });
    source.onerror = () => {
      clearTimeout(timeout);
      // The server ended the response (a reset, a restart) or it never got through.
      if (this.readers.get(stream) !== entry) return;
      source.close();
      this.fail(new TransportError(opened ? "closed" : "blocked", `events of ${stream} failed`));
    };
  }
}
