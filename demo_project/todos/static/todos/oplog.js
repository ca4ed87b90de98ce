// The op log page: the tbody follows the stream (sync-stream) and, after each burst of
// sync:op events, asks the server for the rows after the newest one it shows.
import { bindStatus } from "./ui.js";

bindStatus();

const tbody = document.getElementById("oplog-rows");
const MAX_ROWS = 500;
const REFRESH_MS = 200;

function newestSeq() {
  const first = tbody.querySelector("tr[data-seq]");
  return first ? Number(first.dataset.seq) || 0 : 0;
}

// Times come in UTC; show them in the reader's time zone.
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
function localizeTimes(root) {
  for (const time of root.querySelectorAll("time[datetime]:not([data-local])")) {
    const date = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) continue;
    time.textContent = timeFormat.format(date);
    time.title = dateFormat.format(date);
    time.dataset.local = "true";
  }
}

if (tbody) {
  localizeTimes(tbody);

  // A trailing throttle: the first op of a burst schedules one refresh REFRESH_MS later,
  // which fetches every op of the burst (htmx's own throttle would drop the trailing ones).
  let timer = 0;
  const schedule = () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = 0;
      window.htmx?.trigger(tbody, "oplog:refresh");
    }, REFRESH_MS);
  };
  tbody.addEventListener("sync:op", schedule);
  // Back online (or live for the first time): fetch whatever committed meanwhile.
  document.addEventListener("sync:status", (event) => {
    if (/** @type {CustomEvent} */ (event).detail?.state === "live") schedule();
  });

  // after= is read when the request is made, so a queued refresh asks for the right rows.
  document.body.addEventListener("htmx:configRequest", (event) => {
    const detail = /** @type {CustomEvent} */ (event).detail;
    if (detail.elt === tbody) detail.parameters.after = String(newestSeq());
  });

  let before = 0;
  tbody.addEventListener("htmx:beforeSwap", () => {
    before = newestSeq();
  });
  tbody.addEventListener("htmx:afterSwap", () => {
    // Drop duplicates (two refreshes racing) and the oldest rows past MAX_ROWS.
    const seen = new Set();
    const rows = [...tbody.querySelectorAll("tr[data-seq]")];
    for (const row of rows) {
      if (seen.has(row.dataset.seq)) row.remove();
      else seen.add(row.dataset.seq);
    }
    for (const row of [...tbody.querySelectorAll("tr[data-seq]")].slice(MAX_ROWS)) row.remove();
    for (const row of tbody.querySelectorAll("tr[data-seq]")) {
      if (Number(row.dataset.seq) > before && !row.dataset.seen) row.classList.add("fresh");
      row.dataset.seen = "true";
    }
    localizeTimes(tbody);
  });
  for (const row of tbody.querySelectorAll("tr[data-seq]")) row.dataset.seen = "true";
}
