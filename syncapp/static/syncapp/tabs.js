// One connection per origin: the tabs of a page elect a leader with a Web Lock, and talk
// over a BroadcastChannel. The leader holds the connection; the others send it their
// mutations and presence and get ops, results, presence and status from it. When the
// leader tab closes, its lock is released and the next tab in the lock's queue leads.
//
// Where the browser has neither Web Locks nor BroadcastChannel, every tab leads alone.

export class Tabs {
  /**
   * @param {{name: string, onLead: () => void, onMessage: (message: any) => void,
   *          locks?: LockManager|null, Channel?: typeof BroadcastChannel|null}} options
   */
  constructor({ name, onLead, onMessage, locks = globalThis.navigator?.locks ?? null, Channel = globalThis.BroadcastChannel ?? null }) {
    this.name = name;
    this.onLead = onLead;
    this.onMessage = onMessage;
    this.locks = locks;
    this.Channel = Channel;
    this.id = Math.random().toString(36).slice(2, 10);
    this.leader = false;
    this.channel = null;
    this.release = null;
    this.abort = null;
  }

  /** Can tabs share a connection here? */
  get shared() {
    return Boolean(this.locks && this.Channel);
  }

  start() {
    if (!this.shared) {
      this.lead();
      return;
    }
    this.channel = new this.Channel(this.name);
    this.channel.onmessage = (event) => this.onMessage(event.data);
    this.abort = new AbortController();
    this.locks
      .request(this.name, { signal: this.abort.signal }, () => {
        this.lead();
        // Held until this tab stops (or closes, which releases it too).
        return new Promise((resolve) => {
          this.release = resolve;
        });
      })
      .catch(() => {}); // aborted by stop() while waiting
  }

  lead() {
    this.leader = true;
    this.onLead();
  }

  /** @param {any} message */
  post(message) {
    this.channel?.postMessage({ ...message, tab: this.id });
  }

  /** Let go of the lock and the channel (pagehide, close). */
  stop() {
    this.abort?.abort();
    this.release?.();
    this.release = null;
    this.leader = false;
    this.channel?.close();
    this.channel = null;
  }
}
