// Shared bits of the demo's pages: toasts, the connection status pill, avatars.

/**
 * Build an element: el("a", {href: "/", class: "x"}, "text", otherNode).
 * Attributes whose value is null, undefined or false are left out; true sets "".
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node|string|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const TOAST_MS = 5000;
const MAX_TOASTS = 4;

/**
 * Show a toast in #toasts. `content` is text (a string), a Node, or an array of both;
 * with `{html: true}` a string is trusted markup. Conflict toasts stay until dismissed
 * unless `sticky: false`; the others go after a few seconds unless `sticky: true`.
 * @param {"rejected"|"conflict"|"info"} kind
 * @param {string|Node|Array<string|Node>} content
 * @param {{sticky?: boolean, html?: boolean, timeoutMs?: number}} [options]
 * @returns {HTMLElement & {dismiss: () => void}}
 */
export function showToast(kind, content, options = {}) {
  const { sticky = kind === "conflict", html = false, timeoutMs = TOAST_MS } = options;
  let container = document.getElementById("toasts");
  if (!container) {
    container = el("div", { id: "toasts", class: "toasts", "aria-live": "polite" });
    document.body.append(container);
  }
  const body = el("div", { class: "toast-body" });
  if (html && typeof content === "string") body.innerHTML = content;
  else for (const part of [content].flat()) body.append(part instanceof Node ? part : String(part));
  const close = el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss" }, "×");
  const toast = /** @type {HTMLElement & {dismiss: () => void}} */ (
    el("div", { class: "toast", "data-kind": kind, role: kind === "info" ? "status" : "alert" }, body, close)
  );
  let timer = 0;
  toast.dismiss = () => {
    clearTimeout(timer);
    if (!toast.isConnected || toast.classList.contains("leaving")) return;
    toast.classList.add("leaving");
    const remove = () => toast.remove();
    toast.addEventListener("animationend", remove, { once: true });
    setTimeout(remove, 400); // in case animations are off
  };
  close.addEventListener("click", () => toast.dismiss());
  if (sticky) toast.dataset.sticky = "true";
  else {
    const arm = () => { timer = setTimeout(() => toast.dismiss(), timeoutMs); };
    toast.addEventListener("pointerenter", () => clearTimeout(timer));
    toast.addEventListener("pointerleave", arm);
    arm();
  }
  container.append(toast);
  // Keep the pile short: the oldest transient toasts go first.
  const transient = [...container.querySelectorAll(".toast:not([data-sticky]):not(.leaving)")];
  for (const old of transient.slice(0, Math.max(0, transient.length - MAX_TOASTS))) {
    /** @type {any} */ (old).dismiss?.();
  }
  return toast;
}

/**
 * The words of a server "no": a problem+json body ({detail, title, fields}) or a
 * mutation error ({message, code, fields}), with the fields' own messages when given.
 * @param {any} problem
 * @param {number} [status] the HTTP status, when there is no body
 */
export function problemText(problem, status) {
  if (!problem || typeof problem !== "object") {
    return status ? `HTTP ${status}` : "the server could not be reached";
  }
  const main = problem.detail || problem.message || problem.title || problem.code || `HTTP ${problem.status || status}`;
  const details = [];
  if (problem.fields && typeof problem.fields === "object" && !Array.isArray(problem.fields)) {
    for (const [field, messages] of Object.entries(problem.fields)) {
      const text = [messages].flat().filter((m) => typeof m === "string").join(" ").replace(/\.$/, "");
      if (text && text !== main) details.push(`${field}: ${text}`);
    }
  }
  return [String(main).replace(/\.$/, ""), ...details].join(". ") + ".";
}

const STATE_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  closed: "Disconnected",
};

/** "1 pending edit", "3 pending edits". */
export function pendingText(n) {
  return `${n} pending edit${n === 1 ? "" : "s"}`;
}

/**
 * Show a client status (the `status` event's detail) in the #status pill.
 * @param {{state?: string, transport?: string|null, pending?: number, retryInMs?: number|null}} detail
 */
export function setStatus(detail = {}) {
  const pill = document.getElementById("status");
  if (!pill) return;
  const state = detail.state || pill.dataset.state || "connecting";
  const pending = Number(detail.pending ?? pill.dataset.pending ?? 0) || 0;
  const transport = detail.transport ?? "";
  pill.dataset.state = state;
  pill.dataset.pending = String(pending);
  pill.dataset.transport = transport || "";
  let text = STATE_TEXT[state] || state;
  if (pending > 0) text += ` · ${pendingText(pending)}`;
  let label = pill.querySelector(".status-text");
  if (!label) {
    label = el("span", { class: "status-text" });
    pill.append(label);
  }
  label.textContent = text;
  const hints = [];
  if (state === "live" && transport) hints.push(`Connected over ${transport}`);
  if (state === "reconnecting" && detail.retryInMs) {
    hints.push(`Next attempt in ${Math.ceil(detail.retryInMs / 1000)} s`);
  }
  if (state === "offline" || state === "reconnecting") hints.push("Click to retry now");
  if (pending > 0) hints.push(`${pendingText(pending)} will be sent when the connection is back`);
  pill.title = hints.join(". ") || text;
}

/**
 * Keep #status up to date. With a SyncClient, from its "status" events (a click retries
 * when offline); without one, from the htmx extension's `sync:status` events on document.
 * @param {any} [client]
 * @returns {() => void} stops listening
 */
export function bindStatus(client) {
  const pill = document.getElementById("status");
  if (client && typeof client.on === "function") {
    setStatus({
      state: client.state,
      transport: client.transport,
      pending: client.pendingCount,
    });
    const onClick = () => {
      const state = pill?.dataset.state;
      if ((state === "offline" || state === "reconnecting") && typeof client.retryNow === "function") {
        client.retryNow();
      }
    };
    pill?.addEventListener("click", onClick);
    const off = client.on("status", (detail) => setStatus(detail));
    return () => {
      pill?.removeEventListener("click", onClick);
      if (typeof off === "function") off();
    };
  }
  const onStatus = (event) => setStatus(/** @type {CustomEvent} */ (event).detail || {});
  document.addEventListener("sync:status", onStatus);
  return () => document.removeEventListener("sync:status", onStatus);
}

/** "alice" -> "A", "mary.jane" -> "MJ". */
export function initials(name) {
  const parts = String(name || "?").split(/[\s._-]+/).filter(Boolean);
  if (parts.length >= 2) return (parts[0][0] + parts[1][0]).toUpperCase();
  return (parts[0] || "?").slice(0, 1).toUpperCase();
}

/** A stable, readable color for a name (white text on it stays legible). */
export function colorFor(name) {
  let hash = 0;
  for (const ch of String(name)) hash = (Math.imul(hash, 31) + ch.codePointAt(0)) | 0;
  const hue = ((hash % 360) + 360) % 360;
  return `hsl(${hue} 55% 42%)`;
}
