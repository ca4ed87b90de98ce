// The index page: server-rendered lists made live by the htmx extension (hx-ext="sync").
// This module adds what the attributes cannot say: the status pill, toasts for
// refused changes, and the rename popovers.
import { bindStatus, problemText, showToast } from "./ui.js";

bindStatus(); // from the extension's sync:status events

const lists = document.getElementById("lists");

// The extension rolls an optimistic change back and says why with sync:rejected.
const rejectedAt = new WeakMap();
document.body.addEventListener("sync:rejected", (event) => {
  const { status, problem } = /** @type {CustomEvent} */ (event).detail || {};
  if (event.target instanceof Element) rejectedAt.set(event.target, Date.now());
  showToast("rejected", `Couldn't save: ${problemText(problem, status)}`);
});

// Requests that the extension does not report (not optimistic, or a network failure).
function reportFailure(event, message) {
  const elt = event.detail?.elt || event.target;
  setTimeout(() => {
    const at = rejectedAt.get(elt);
    if (at && Date.now() - at < 2000) return; // sync:rejected said it already
    showToast("rejected", message);
  }, 50);
}
document.body.addEventListener("htmx:responseError", (event) => {
  const xhr = event.detail?.xhr;
  let problem = null;
  try {
    problem = JSON.parse(xhr?.responseText || "null");
  } catch {
    // not JSON
  }
  reportFailure(event, `Couldn't save: ${problemText(problem, xhr?.status)}`);
});
document.body.addEventListener("htmx:sendError", (event) => {
  reportFailure(event, "Couldn't save: the server could not be reached. Are you offline?");
});

if (lists) {
  // Rename popovers: start from the current name, one open at a time, close on save/Escape.
  lists.addEventListener(
    "toggle",
    (event) => {
      const details = event.target;
      if (!(details instanceof HTMLDetailsElement) || !details.open) return;
      for (const other of lists.querySelectorAll("details.rename[open]")) {
        if (other !== details) other.open = false;
      }
      const item = details.closest("li");
      const input = details.querySelector("input[name=name]");
      const name = item?.querySelector("[sync-field=name]")?.textContent ?? "";
      if (input) {
        input.value = name.trim();
        input.focus();
        input.select();
      }
    },
    true, // toggle does not bubble
  );
  lists.addEventListener("submit", (event) => {
    const details = event.target instanceof Element && event.target.closest("details.rename");
    if (details) details.open = false;
  });
  lists.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const details = event.target instanceof Element && event.target.closest("details.rename");
    if (details) {
      details.open = false;
      details.querySelector("summary")?.focus();
    }
  });
  document.addEventListener("click", (event) => {
    for (const details of lists.querySelectorAll("details.rename[open]")) {
      if (!details.contains(/** @type {Node} */ (event.target))) details.open = false;
    }
  });
}
