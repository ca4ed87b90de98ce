// The long-poll transport: `GET <url>api/streams/<stream>/ops/?epoch=&after=&wait=`,
// one request in flight per stream, mutations over POST. The last fallback.

import { HttpTransport, apiUrl, fetchSnapshot, requestJSON } from "./http.js";

const WAIT_SECONDS = 25;

export class LongPollTransport extends HttpTransport {
  /**
   * @param {{url: string, clientId: string, handlers: import("./errors.js").TransportHandlers,
   *          waitSeconds?: number}} options
   */
  constructor({ waitSeconds = WAIT_SECONDS, ...options }) {
    super("longpoll", options);
    this.waitSeconds = waitSeconds;
  }

  async open() {}

  /**
   * @param {string} stream
   * @param {{epoch: string, seq: number}|null} position
   */
  async subscribe(stream, position) {
    this.unsubscribe(stream);
    const abort = new AbortController();
    this.readers.set(stream, { stop: () => abort.abort() });
    let at = position && position.epoch ? { ...position } : null;
    let first = true;
    while (!abort.signal.aborted && !this.closed) {
      try {
        if (!at) {
          const snapshot = await fetchSnapshot(this.url, stream, abort.signal);
          if (abort.signal.aborted) return;
          this.handlers.onSnapshot(stream, snapshot);
          at = { epoch: snapshot.epoch, seq: snapshot.seq };
        }
        // The first request answers at once, so the caller knows the stream is reachable.
        const wait = first ? 0 : this.waitSeconds;
        const query = `?epoch=${encodeURIComponent(at.epoch)}&after=${at.seq}&wait=${wait}&limit=500`;
        const { status, data } = await requestJSON(
          apiUrl(this.url, `api/streams/${encodeURIComponent(stream)}/ops/`) + query,
          { signal: abort.signal },
        );
        if (abort.signal.aborted) return;
        if (status === 409) {
          this.handlers.onReset(stream, data);
          at = null;
          continue;
        }
        if (first) {
          first = false;
          this.handlers.onSubscribed?.(stream, { epoch: data.epoch, head: data.head });
        }
        if (data.ops.length) {
          this.handlers.onOps(stream, data.ops);
          const last = data.ops[data.ops.length - 1];
          at = { epoch: last.epoch, seq: last.seq };
        }
      } catch (error) {
        if (error.name === "AbortError" || abort.signal.aborted) return;
        this.fail(error);
        return;
      }
    }
  }
}
