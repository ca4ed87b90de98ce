// One todo list, rendered in the browser from the sync client's optimistic view.
//
// The page is an app shell (templates/todos/list.html): #app's data-* attributes say
// which list and who is looking; everything else comes from the SyncClient, which
// restores its state from IndexedDB, so a reload works offline.
//
// DOM contract (the browser tests rely on it):
//   form#new-todo > input[name=title]           creates a todo at the end
//   ul#todos > li.todo[data-pk]                 in `order`, then pk; .pending while unconfirmed
//     input.toggle[type=checkbox]               completed (lww)
//     input.title                               title (manual: sent with base_version)
//     button.delete
//     span.handle[draggable=true]               drag to reorder; Alt+ArrowUp/Down on the li
//     span.typing[data-user]                    "alice is typing…"
//   #empty                                      the empty state
//   div#presence > span.avatar[data-user]       one per present user (yours: data-you)
//   div.cursor[data-user]                       other people's cursors, inside #app
//   #new-typing > span.typing[data-user]        typing in the new-todo field
import { SyncClient } from "/static/syncapp/sync-client.js";
import { generateKeyBetween } from "./vendor/fractional-indexing.js";
import { bindStatus, colorFor, el, initials, problemText, setStatus, showToast } from "./ui.js";

const MODEL = "todos.todo";
const LIST_MODEL = "todos.todolist";
const TYPING_IDLE_MS = 2000;

const root = /** @type {HTMLElement} */ (document.getElementById("app"));
const config = root.dataset;
const streamName = config.stream;
const listId = config.list;
const me = { id: String(config.userId), name: config.username || "you" };
const isStaff = config.staff === "true";

const ul = /** @type {HTMLUListElement} */ (document.getElementById("todos"));
const emptyState = /** @type {HTMLElement} */ (document.getElementById("empty"));
const countLabel = document.getElementById("count");
const clearCompleted = /** @type {HTMLButtonElement|null} */ (document.getElementById("clear-completed"));
const newForm = /** @type {HTMLFormElement} */ (document.getElementById("new-todo"));
const newInput = /** @type {HTMLInputElement} */ (newForm.elements.namedItem("title"));
const newTyping = /** @type {HTMLElement} */ (document.getElementById("new-typing"));
const presenceBox = /** @type {HTMLElement} */ (document.getElementById("presence"));
const cursorLayer = document.getElementById("cursors") || root;
const announcer = document.getElementById("announcer");
const heading = document.getElementById("list-name");

const client = new SyncClient({ url: config.syncUrl || "/sync/", serviceWorker: config.serviceWorker || "/sw.js" });
const stream = client.stream(streamName);
const listsStream = client.stream("todos.lists"); // the list's own name, and its deletion

const ignore = () => {}; // results arrive as events too ("rejected", "conflict")
const announce = (text) => {
  if (announcer) announcer.textContent = text;
};

function newId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---------------------------------------------------------------- order keys

const orderOf = (obj) => (typeof obj?.fields?.order === "string" ? obj.fields.order : "");

function compareTodos(a, b) {
  const ao = orderOf(a);
  const bo = orderOf(b);
  if (ao !== bo) return ao < bo ? -1 : 1; // code-unit order, as the server's
  const ap = String(a.pk);
  const bp = String(b.pk);
  return ap < bp ? -1 : ap > bp ? 1 : 0;
}

/** The todos of the optimistic view, in display order. */
function currentTodos() {
  return [...stream.objects(MODEL)].sort(compareTodos);
}

/**
 * An order key for a todo put at `index` of `others` (the list without it). Only the
 * moved todo's key changes: equal neighbours (two todos added at once) are skipped over.
 */
function keyAt(others, index) {
  const prev = index > 0 ? orderOf(others[index - 1]) || null : null;
  let next = null;
  for (let i = index; i < others.length; i++) {
    const key = orderOf(others[i]);
    if (key && (prev === null || key > prev)) {
      next = key;
      break;
    }
  }
  try {
    return generateKeyBetween(prev, next);
  } catch {
    // A key that is not a fractional index (edited by hand): still sort after prev.
    try {
      return generateKeyBetween(prev, null);
    } catch {
      return `${prev ?? "a0"}V`;
    }
  }
}

function moveTo(pk, index) {
  const todos = currentTodos();
  const from = todos.findIndex((t) => String(t.pk) === pk);
  if (from < 0) return;
  const others = todos.filter((t) => String(t.pk) !== pk);
  index = Math.max(0, Math.min(index, others.length));
  if (index === from) return; // where it is already
  const order = keyAt(others, index);
  client.update(streamName, MODEL, pk, { order }).catch(ignore);
  const title = todos[from].fields.title || "Todo";
  announce(`${title} moved to position ${index + 1} of ${todos.length}.`);
}

// ---------------------------------------------------------------- rows

/** @type {Map<string, HTMLLIElement>} */
const rows = new Map();
/** @type {Map<string, any>} the latest object shown in each row */
const shown = new Map();
/** @type {Map<string, {baseVersion: number, original: string}>} titles being edited */
const editing = new Map();
let loaded = false;

const ICON_GRIP =
  '<svg viewBox="0 0 20 20" width="16" height="16" aria-hidden="true"><circle cx="7" cy="5" r="1.4"/><circle cx="13" cy="5" r="1.4"/><circle cx="7" cy="10" r="1.4"/><circle cx="13" cy="10" r="1.4"/><circle cx="7" cy="15" r="1.4"/><circle cx="13" cy="15" r="1.4"/></svg>';
const ICON_X =
  '<svg viewBox="0 0 20 20" width="16" height="16" aria-hidden="true"><path d="M5.5 5.5l9 9M14.5 5.5l-9 9"/></svg>';

function createRow(pk) {
  const handle = el("span", {
    class: "handle",
    draggable: "true",
    tabindex: "0",
    role: "button",
    title: "Drag to reorder (or Alt+↑/↓)",
    "aria-label": "Reorder: drag, or press Alt with the up and down arrows",
  });
  handle.innerHTML = ICON_GRIP;
  const toggle = el("input", { class: "toggle", type: "checkbox", "aria-label": "Done" });
  const title = el("input", {
    class: "title",
    type: "text",
    maxlength: "500",
    autocomplete: "off",
    "aria-label": "Title",
    enterkeyhint: "done",
  });
  const remove = el("button", { class: "delete", type: "button", "aria-label": "Delete", title: "Delete" });
  remove.innerHTML = ICON_X;
  const typing = el("span", { class: "typing-slot", "aria-live": "polite" });
  const li = /** @type {HTMLLIElement} */ (
    el("li", { class: "todo", "data-pk": pk, tabindex: "-1" }, handle, toggle, title, remove, typing)
  );
  return li;
}

function updateRow(li, obj) {
  const pk = li.dataset.pk;
  const completed = Boolean(obj.fields.completed);
  const title = obj.fields.title ?? "";
  li.classList.toggle("pending", Boolean(obj.pending));
  li.classList.toggle("done", completed);
  li.title = obj.pending ? "Not saved yet: waits for the server" : "";
  const toggle = /** @type {HTMLInputElement} */ (li.querySelector("input.toggle"));
  if (toggle.checked !== completed) toggle.checked = completed;
  const input = /** @type {HTMLInputElement} */ (li.querySelector("input.title"));
  if (document.activeElement === input && editing.has(pk)) {
    // Never overwrite what someone is typing; their commit carries the version they saw.
    input.dataset.remote = title;
  } else if (input.value !== title) {
    input.value = title;
  }
}

function renderEmpty(count) {
  emptyState.hidden = count > 0;
  emptyState.dataset.loading = String(!loaded);
  if (count > 0) return;
  emptyState.textContent = root.classList.contains("gone")
    ? "This list is gone."
    : loaded
      ? "Nothing to do yet. Add the first todo above."
      : "Loading…";
}

/**
 * Put `desired` in order in the ul, moving as few rows as possible and never the one
 * that holds the focus (moving it would blur an input someone is typing in).
 */
function arrange(desired) {
  if (!desired.length) return;
  const focused = document.activeElement?.closest?.("li.todo");
  let anchor = desired.indexOf(/** @type {any} */ (focused));
  if (anchor < 0) anchor = desired.findIndex((li) => li.parentNode === ul);
  if (anchor < 0) {
    anchor = 0;
    ul.append(desired[0]);
  }
  for (let i = anchor - 1; i >= 0; i--) {
    if (desired[i].nextSibling !== desired[i + 1]) ul.insertBefore(desired[i], desired[i + 1]);
  }
  for (let i = anchor + 1; i < desired.length; i++) {
    if (desired[i].previousSibling !== desired[i - 1]) {
      ul.insertBefore(desired[i], desired[i - 1].nextSibling);
    }
  }
}

function render() {
  const todos = currentTodos();
  const keep = new Set();
  const desired = [];
  for (const obj of todos) {
    const pk = String(obj.pk);
    keep.add(pk);
    let li = rows.get(pk);
    if (!li) {
      li = createRow(pk);
      rows.set(pk, li);
    }
    shown.set(pk, obj);
    updateRow(li, obj);
    desired.push(li);
  }
  for (const [pk, li] of rows) {
    if (keep.has(pk)) continue;
    const hadFocus = li.contains(document.activeElement);
    li.remove();
    rows.delete(pk);
    shown.delete(pk);
    editing.delete(pk);
    if (hadFocus) newInput.focus();
  }
  arrange(desired);
  renderEmpty(todos.length);
  const left = todos.filter((t) => !t.fields.completed).length;
  if (countLabel) {
    countLabel.textContent = todos.length ? `${left} of ${todos.length} left` : "";
  }
  if (clearCompleted) clearCompleted.hidden = left === todos.length;
  renderTyping();
}

// ---------------------------------------------------------------- editing

function rowOf(target) {
  const li = target instanceof Element ? target.closest("li.todo") : null;
  return li && ul.contains(li) ? /** @type {HTMLLIElement} */ (li) : null;
}

/** @type {Map<string, Promise<any>>} the last title write of each todo, until answered */
const titleWrites = new Map();

function commitTitle(input) {
  const li = rowOf(input);
  if (!li) return;
  const pk = /** @type {string} */ (li.dataset.pk);
  const obj = shown.get(pk);
  const value = input.value.trim();
  if (!obj || !value) {
    input.value = obj?.fields.title ?? ""; // an empty title is not a title: put it back
    return;
  }
  const edit = editing.get(pk) ?? { baseVersion: obj.version || 1, original: obj.fields.title ?? "" };
  // Unchanged since the edit began, or already sent (Enter, then the blur's change).
  if (value === edit.original) return;
  editing.set(pk, { ...edit, original: value });
  const previous = titleWrites.get(pk);
  const write = (async () => {
    // Our own previous title write first (online it takes milliseconds): the version it
    // makes is what this one is based on, else the server would see our own edit as
    // someone else's and keep this one aside as a conflict.
    if (previous && client.state === "live") await previous;
    const now = shown.get(pk) ?? obj;
    // Nobody changed the title since the edit began: the freshest version is a fair base.
    // Somebody did: the version the edit began from, so the server sees the conflict.
    const fresh = now.fields.title === edit.original && !now.pending;
    const baseVersion = fresh ? now.version || 1 : edit.baseVersion;
    return client.update(streamName, MODEL, pk, { title: value }, { baseVersion });
  })();
  titleWrites.set(pk, write);
  write.catch(ignore).finally(() => {
    if (titleWrites.get(pk) === write) titleWrites.delete(pk);
  });
}

ul.addEventListener("focusin", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLInputElement) || !target.classList.contains("title")) return;
  const li = rowOf(target);
  const pk = li?.dataset.pk;
  const obj = pk && shown.get(pk);
  if (!pk || !obj) return;
  // The version this edit is based on: a title changed by someone else meanwhile is a
  // conflict (manual policy), kept for a person to decide.
  editing.set(pk, { baseVersion: obj.version || 1, original: obj.fields.title ?? "" });
});

ul.addEventListener("focusout", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLInputElement) || !target.classList.contains("title")) return;
  const li = rowOf(target);
  stopTyping();
  // "change" has fired (if the value changed); show the latest value again.
  queueMicrotask(() => {
    if (!li || document.activeElement === target) return;
    const pk = /** @type {string} */ (li.dataset.pk);
    editing.delete(pk);
    delete target.dataset.remote;
    const obj = shown.get(pk);
    if (obj) updateRow(li, obj);
  });
});

ul.addEventListener("change", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLInputElement)) return;
  const li = rowOf(target);
  if (!li) return;
  const pk = /** @type {string} */ (li.dataset.pk);
  if (target.classList.contains("toggle")) {
    client.update(streamName, MODEL, pk, { completed: target.checked }).catch(ignore);
  } else if (target.classList.contains("title")) {
    commitTitle(target);
  }
});

ul.addEventListener("input", (event) => {
  const target = event.target;
  if (target instanceof HTMLInputElement && target.classList.contains("title")) {
    const pk = rowOf(target)?.dataset.pk;
    if (pk) typing(pk);
  }
});

ul.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("button.delete") : null;
  const li = button && rowOf(button);
  if (!li) return;
  const pk = /** @type {string} */ (li.dataset.pk);
  const obj = shown.get(pk);
  // Where the focus goes once the row is gone: the next row, else the previous, else the input.
  const neighbour = /** @type {HTMLElement|null} */ (li.nextElementSibling || li.previousElementSibling);
  client.delete(streamName, MODEL, pk, { baseVersion: obj?.version || undefined }).catch(ignore);
  announce(`Deleted ${obj?.fields.title || "todo"}.`);
  (neighbour || newInput).focus();
});

ul.addEventListener("keydown", (event) => {
  const li = rowOf(event.target);
  if (!li) return;
  const pk = /** @type {string} */ (li.dataset.pk);
  const target = event.target;
  if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
    event.preventDefault();
    const index = currentTodos().findIndex((t) => String(t.pk) === pk);
    if (index < 0) return;
    // In the list without it, the slot one above is index-1; one below is index+1.
    moveTo(pk, event.key === "ArrowUp" ? index - 1 : index + 1);
    queueMicrotask(() => li.scrollIntoView({ block: "nearest" }));
    return;
  }
  if (target instanceof HTMLInputElement && target.classList.contains("title")) {
    if (event.key === "Enter") {
      event.preventDefault();
      commitTitle(target);
      target.blur();
    } else if (event.key === "Escape") {
      const obj = shown.get(pk);
      target.value = editing.get(pk)?.original ?? obj?.fields.title ?? "";
      target.blur();
    }
  }
});

newForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const title = newInput.value.trim();
  if (!title) return;
  const todos = currentTodos();
  const order = keyAt(todos, todos.length);
  client
    .create(streamName, MODEL, newId(), { list: listId, title, completed: false, order })
    .catch(ignore);
  newInput.value = "";
  stopTyping();
  newInput.focus();
});
newInput.addEventListener("input", () => (newInput.value ? typing("new") : stopTyping()));
newInput.addEventListener("blur", () => stopTyping());

clearCompleted?.addEventListener("click", () => {
  for (const todo of currentTodos()) {
    if (todo.fields.completed) {
      client.delete(streamName, MODEL, String(todo.pk), { baseVersion: todo.version || undefined }).catch(ignore);
    }
  }
  newInput.focus();
});

// ---------------------------------------------------------------- drag and drop

let dragPk = null;

function clearDropMarks() {
  for (const li of ul.querySelectorAll(".drop-before, .drop-after")) {
    li.classList.remove("drop-before", "drop-after");
  }
}

/** Where a drop at clientY puts the dragged todo: an index in the list without it. */
function dropSlot(clientY) {
  const all = [...ul.querySelectorAll(":scope > li.todo")];
  const from = all.findIndex((li) => li.dataset.pk === dragPk);
  const others = all.filter((li) => li.dataset.pk !== dragPk);
  if (!others.length) return { index: 0, mark: null, side: null };
  // The row under the pointer, else the nearest one.
  let best = 0;
  let bestDistance = Infinity;
  for (const [i, li] of others.entries()) {
    const rect = li.getBoundingClientRect();
    const distance = clientY < rect.top ? rect.top - clientY : clientY > rect.bottom ? clientY - rect.bottom : 0;
    if (distance < bestDistance) {
      best = i;
      bestDistance = distance;
    }
  }
  const target = others[best];
  const rect = target.getBoundingClientRect();
  let after;
  if (clientY < rect.top) after = false;
  else if (clientY > rect.bottom) after = true;
  else {
    // Over a row: take its place (moving down puts it after the row, moving up before).
    const targetIndex = all.indexOf(target);
    after = from >= 0 ? targetIndex > from : clientY > rect.top + rect.height / 2;
  }
  return { index: after ? best + 1 : best, mark: target, side: after ? "drop-after" : "drop-before" };
}

ul.addEventListener("dragstart", (event) => {
  const handle = event.target instanceof Element ? event.target.closest(".handle") : null;
  const li = handle && rowOf(handle);
  if (!li || !event.dataTransfer) {
    event.preventDefault();
    return;
  }
  dragPk = li.dataset.pk;
  event.dataTransfer.effectAllowed = "move";
  event.dataTransfer.setData("text/plain", li.querySelector("input.title")?.value || "");
  event.dataTransfer.setDragImage(li, 24, li.offsetHeight / 2);
  requestAnimationFrame(() => li.classList.add("dragging"));
});

ul.addEventListener("dragover", (event) => {
  if (!dragPk) return;
  event.preventDefault();
  if (event.dataTransfer) event.dataTransfer.dropEffect = "move";
  const { mark, side } = dropSlot(event.clientY);
  if (mark && side && mark.classList.contains(side)) return;
  clearDropMarks();
  if (mark && side) mark.classList.add(side);
});

ul.addEventListener("dragleave", (event) => {
  if (!ul.contains(/** @type {Node|null} */ (event.relatedTarget))) clearDropMarks();
});

ul.addEventListener("drop", (event) => {
  if (!dragPk) return;
  event.preventDefault();
  const pk = dragPk;
  const { index } = dropSlot(event.clientY);
  clearDropMarks();
  moveTo(pk, index);
});

ul.addEventListener("dragend", () => {
  for (const li of ul.querySelectorAll("li.dragging")) li.classList.remove("dragging");
  clearDropMarks();
  dragPk = null;
});

// ---------------------------------------------------------------- presence

const nameOf = (member) => member?.user?.name || member?.user?.username || "someone";

/** Is this member our own connection? */
function isSelf(connectionId, member) {
  const own = client.connectionId;
  if (typeof own === "string" && own) return connectionId === own;
  if (String(member?.user?.id) !== me.id) return false;
  const clientId = client.clientId;
  if (typeof clientId === "string" && clientId && member?.client_id) return member.client_id === clientId;
  return true; // unsure: treat every connection of ours as ourselves
}

/** [connection id, member] of the other connections. */
function others() {
  const members = stream.presence.members();
  return [...members].filter(([id, member]) => !isSelf(id, member));
}

let avatarsKey = "";
function renderAvatars() {
  const people = [{ name: me.name, you: true, count: 1 }];
  for (const [userId, entry] of stream.presence.byUser()) {
    if (String(userId) === me.id) continue;
    people.push({ name: nameOf(entry), you: false, count: entry.states?.length || 1 });
  }
  people.sort((a, b) => (a.you ? -1 : b.you ? 1 : a.name.localeCompare(b.name)));
  const key = people.map((p) => `${p.name}:${p.count}`).join("|");
  if (key === avatarsKey) return;
  avatarsKey = key;
  const avatars = people.map((person) => {
    const title = person.you ? `${person.name} (you)` : person.count > 1 ? `${person.name} (${person.count} windows)` : person.name;
    return el(
      "span",
      {
        class: "avatar",
        "data-user": person.name,
        "data-you": person.you ? "true" : null,
        title,
        "aria-label": title,
        style: `--avatar-color: ${colorFor(person.name)}`,
      },
      initials(person.name),
    );
  });
  const label = el(
    "span",
    { class: "presence-label" },
    people.length > 1 ? `${people.length} here` : "Just you",
  );
  presenceBox.replaceChildren(...avatars, label);
}

/** @type {Map<string, HTMLElement>} */
const cursors = new Map();
function renderCursors() {
  const live = new Set();
  for (const [id, member] of others()) {
    const cursor = member.state?.cursor;
    if (!Array.isArray(cursor) || cursor.length < 2 || !cursor.every(Number.isFinite)) continue;
    live.add(id);
    const name = nameOf(member);
    let node = cursors.get(id);
    if (!node) {
      node = el(
        "div",
        { class: "cursor", "data-user": name, style: `--cursor-color: ${colorFor(name)}` },
        el("span", { class: "cursor-label" }, name),
      );
      node.insertAdjacentHTML(
        "afterbegin",
        '<svg class="cursor-arrow" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true"><path d="M2 1.5l11 6.2-4.9 1.2L6 13.8z"/></svg>',
      );
      cursorLayer.append(node);
      cursors.set(id, node);
    }
    node.style.transform = `translate(${Math.round(cursor[0])}px, ${Math.round(cursor[1])}px)`;
  }
  for (const [id, node] of cursors) {
    if (!live.has(id)) {
      node.remove();
      cursors.delete(id);
    }
  }
}

function renderTyping() {
  const wanted = new Map(); // slot element -> names
  for (const [, member] of others()) {
    const target = member.state?.typing;
    if (target === null || target === undefined || target === "") continue;
    const slot =
      target === "new" ? newTyping : rows.get(String(target))?.querySelector(".typing-slot");
    if (!slot) continue;
    const names = wanted.get(slot) || new Set();
    names.add(nameOf(member));
    wanted.set(slot, names);
  }
  for (const slot of [newTyping, ...ul.querySelectorAll(".typing-slot")]) {
    const names = [...(wanted.get(slot) || [])].sort();
    const current = [...slot.querySelectorAll("span.typing")].map((s) => s.dataset.user);
    if (names.join("|") === current.join("|")) continue;
    slot.replaceChildren(
      ...names.map((name) =>
        el("span", { class: "typing", "data-user": name, style: `--typing-color: ${colorFor(name)}` }, `${name} is typing…`),
      ),
    );
  }
}

function renderPresence() {
  renderAvatars();
  renderCursors();
  renderTyping();
}

// Our own state: join with an empty one, then cursor and typing as they change.
let typingTarget = null;
let typingTimer = 0;
function typing(target) {
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  if (typingTarget === target) return;
  typingTarget = target;
  stream.presence.set({ typing: target });
}
function stopTyping() {
  clearTimeout(typingTimer);
  if (typingTarget === null) return;
  typingTarget = null;
  stream.presence.set({ typing: null });
}

root.addEventListener("pointermove", (event) => {
  if (event.pointerType === "touch") return; // a finger is not a cursor
  const rect = root.getBoundingClientRect();
  stream.presence.set({ cursor: [Math.round(event.clientX - rect.left), Math.round(event.clientY - rect.top)] });
});
root.addEventListener("pointerleave", () => stream.presence.set({ cursor: null }));

// ---------------------------------------------------------------- the list itself

listsStream.on("change", () => {
  const obj = listsStream.get(LIST_MODEL, listId);
  if (obj) {
    const name = obj.fields.name ?? "";
    if (heading && heading.textContent !== name) heading.textContent = name;
    document.title = `${name} · syncapp demo`;
  }
});
listsStream.on("op", (op) => {
  if (op?.op === "delete" && op.model === LIST_MODEL && String(op.pk) === listId) {
    const gone = document.getElementById("list-gone");
    if (gone) gone.hidden = false;
    root.classList.add("gone");
    render();
  }
});

// ---------------------------------------------------------------- client events

bindStatus(client);

client.on("status", (detail) => {
  // Offline with nothing restored: say so rather than "Loading…" forever.
  if (!loaded && (detail?.state === "offline" || detail?.state === "closed")) {
    loaded = true;
    render();
  }
});

function describeMutation(mutation) {
  const obj = mutation && shown.get(String(mutation.pk));
  const title = obj?.fields?.title || mutation?.fields?.title;
  return title ? `“${title}”` : "";
}

client.on("rejected", ({ mutation, error } = {}) => {
  const what = describeMutation(mutation);
  showToast("rejected", `Couldn't save${what ? ` ${what}` : ""}: ${problemText(error)}`);
});

const show = (value) => (value === null || value === undefined ? "nothing" : typeof value === "string" ? value : JSON.stringify(value));

client.on("conflict", ({ mutation, result, fields } = {}) => {
  const entries = Object.entries(fields || {});
  const parts = [];
  if (!entries.length) {
    parts.push(el("strong", {}, "Conflict"), ": ", result?.error?.message || "the server kept another version.");
  }
  for (const [field, { mine, server, reason } = {}] of entries) {
    parts.push(
      el("strong", { class: "toast-title" }, `Someone else changed the ${field} first`),
      el("span", { class: "toast-detail" }, "yours: ", el("em", {}, show(mine)), " / kept: ", el("em", {}, show(server))),
      reason ? el("span", { class: "toast-detail muted small" }, reason) : "",
    );
  }
  if (isStaff) {
    parts.push(el("a", { class: "toast-link", href: config.conflictsUrl || "/admin/syncapp/conflict/" }, "Review conflicts in the admin"));
  } else if (entries.some(([field]) => field === "title")) {
    parts.push(el("span", { class: "toast-detail muted" }, "An admin can pick the title to keep."));
  }
  showToast("conflict", parts, { sticky: true });
});

let authToast = null;
client.on("auth", () => {
  if (authToast?.isConnected) return;
  const login = config.loginUrl || `/accounts/login/?next=${encodeURIComponent(location.pathname)}`;
  authToast = showToast(
    "info",
    ["Your session has ended, so changes wait here. ", el("a", { class: "toast-link", href: login }, "Log in again")],
    { sticky: true },
  );
});

stream.on("change", () => {
  loaded = true;
  render();
  // An op that confirms a pending mutation changes the count without a status event.
  const pill = document.getElementById("status");
  if (pill && pill.dataset.pending !== String(client.pendingCount)) {
    setStatus({ state: client.state, transport: client.transport, pending: client.pendingCount });
  }
});
stream.on("presence", renderPresence);

// For the console and the browser tests: the page's client and stream.
window.syncDemo = { client, stream, lists: listsStream };

render();
renderAvatars();
client.start();
stream.presence.set({ cursor: null, typing: null });
