// The htmx extension: `hx-ext="sync"` (htmx 2). See docs/htmx.md.
//
// Elements bound to synced objects (`sync-object`, `sync-field`) follow the ops of their
// `sync-stream` container, with no request per op; htmx requests that change synced
// objects carry an Idempotency-Key, change the page at once (`sync-optimistic`) and are
// put back, with a `sync:rejected` event saying why, if the server says no.

import { uuid } from "./ids.js";
import { SyncClient } from "./sync-client.js";
import { csrfToken } from "./transports/http.js";

const htmx = globalThis.htmx;
if (!htmx) throw new Error("htmx-sync.js needs htmx 2 loaded first (window.htmx)");

/** @type {SyncClient|null} */
let client = null;
/** @type {WeakMap<Element, () => void>} what puts an optimistic change back */
const undo = new WeakMap();
/** @type {WeakSet<Element>} */
const bound = new WeakSet();

/** The extension's root element (the one with `hx-ext="sync"`). */
function root() {
  return document.querySelector('[hx-ext~="sync"], [data-hx-ext~="sync"]');
}

function syncUrl() {
  return root()?.getAttribute("sync-url") || "/sync/";
}

function getClient() {
  if (!client) {
    client = new SyncClient({ url: syncUrl(), persist: false });
    client.on("status", (detail) => document.dispatchEvent(new CustomEvent("sync:status", { detail })));
    client.start();
  }
  return client;
}

/** @param {string} model @param {any} pk */
function objectSelector(model, pk) {
  return `[sync-object="${CSS.escape(`${model}:${pk}`)}"]`;
}

/**
 * Put `value` into a `sync-field` element: text, an input's value, a checkbox's state.
 * @param {Element} element
 * @param {any} value
 */
function setField(element, value) {
  if (element instanceof HTMLInputElement && (element.type === "checkbox" || element.type === "radio")) {
    element.checked = value === true || value === "true" || value === "on";
  } else if (element instanceof HTMLInputElement || element instanceof HTMLTextAreaElement || element instanceof HTMLSelectElement) {
    // Do not pull the text from under someone's fingers.
    if (document.activeElement !== element) element.value = value ?? "";
  } else {
    element.textContent = value ?? "";
  }
}

/** @param {Element} element */
function getField(element) {
  if (element instanceof HTMLInputElement && (element.type === "checkbox" || element.type === "radio")) return element.checked;
  if (element instanceof HTMLInputElement || element instanceof HTMLTextAreaElement || element instanceof HTMLSelectElement) return element.value;
  return element.textContent;
}

/**
 * @param {Element} objectElement
 * @param {Record<string, any>} fields
 */
function fill(objectElement, fields) {
  for (const [name, value] of Object.entries(fields)) {
    for (const element of objectElement.querySelectorAll(`[sync-field="${CSS.escape(name)}"]`)) setField(element, value);
    if (objectElement.getAttribute("sync-field") === name) setField(objectElement, value);
  }
}

/**
 * A clone of the container's template for `model`, bound to `pk` (`{pk}` in attributes
 * is replaced), or null.
 * @param {Element} container
 * @param {string} model
 * @param {any} pk
 */
function cloneTemplate(container, model, pk) {
  const template = container.querySelector(`template[sync-template="${CSS.escape(model)}"]`);
  const first = template?.content.firstElementChild;
  if (!template || !first) return null;
  const clone = /** @type {Element} */ (first.cloneNode(true));
  for (const element of [clone, ...clone.querySelectorAll("*")]) {
    for (const attribute of [...element.attributes]) {
      if (attribute.value.includes("{pk}")) element.setAttribute(attribute.name, attribute.value.replaceAll("{pk}", String(pk)));
    }
  }
  clone.setAttribute("sync-object", `${model}:${pk}`);
  return { clone, template };
}

/**
 * Show one op in a container.
 * @param {Element} container
 * @param {any} op
 */
function applyOp(container, op) {
  const elements = [...container.querySelectorAll(objectSelector(op.model, op.pk))];
  if (op.op === "delete") {
    for (const element of elements) element.remove();
  } else if (elements.length) {
    for (const element of elements) {
      element.classList.remove("sync-pending");
      fill(element, op.fields);
    }
  } else if (op.op === "create") {
    const made = cloneTemplate(container, op.model, op.pk);
    if (made) {
      fill(made.clone, op.fields);
      made.template.before(made.clone);
      htmx.process(made.clone);
    }
  }
  container.dispatchEvent(new CustomEvent("sync:op", { bubbles: true, detail: { op } }));
}

/** Follow the `sync-stream` containers under `element`. */
function bind(element) {
  const containers = element.matches?.("[sync-stream]") ? [element] : [];
  containers.push(...(element.querySelectorAll?.("[sync-stream]") ?? []));
  for (const container of containers) {
    if (bound.has(container) || !container.closest('[hx-ext~="sync"], [data-hx-ext~="sync"]')) continue;
    bound.add(container);
    const handle = getClient().stream(container.getAttribute("sync-stream"));
    handle.on("op", (op) => applyOp(container, op));
  }
}

/** Is this request for syncapp's own API (so its body goes as JSON)? */
function isSyncApi(path) {
  const base = new URL(syncUrl(), location.href);
  const target = new URL(path, location.href);
  return target.origin === base.origin && target.pathname.startsWith(base.pathname);
}

/** @param {FormData|Record<string, any>} parameters */
function toObject(parameters) {
  if (typeof parameters?.forEach !== "function" || !(parameters instanceof FormData)) return { ...(parameters ?? {}) };
  const object = {};
  parameters.forEach((value, key) => {
    object[key] = key in object ? [].concat(object[key], value) : value;
  });
  return object;
}

/**
 * Apply an element's request to the page before the answer; remember how to undo it.
 * @param {Element} elt
 * @param {string} verb
 * @param {Record<string, any>} values
 */
function optimistic(elt, verb, values) {
  const objectElement = elt.closest("[sync-object]");
  if (verb === "delete" && objectElement) {
    const hidden = objectElement.hidden;
    objectElement.hidden = true;
    undo.set(elt, () => {
      objectElement.hidden = hidden;
    });
  } else if ((verb === "patch" || verb === "put") && objectElement) {
    const before = [];
    for (const name of Object.keys(values)) {
      for (const element of objectElement.querySelectorAll(`[sync-field="${CSS.escape(name)}"]`)) {
        before.push([element, getField(element)]);
        setField(element, values[name]);
      }
    }
    undo.set(elt, () => {
      for (const [element, value] of before) setField(element, value);
    });
  } else if (verb === "post") {
    const model = elt.getAttribute("sync-optimistic");
    const container = elt.closest("[sync-stream]") ?? document.querySelector(`[sync-stream] template[sync-template="${CSS.escape(model)}"]`)?.closest("[sync-stream]");
    const made = model && container ? cloneTemplate(container, model, `pending-${uuid()}`) : null;
    if (!made) return;
    fill(made.clone, values);
    made.clone.classList.add("sync-pending");
    made.template.before(made.clone);
    undo.set(elt, () => made.clone.remove());
    elt.syncCreated = { clone: made.clone, model, values };
  }
  objectElement?.classList.add("sync-pending");
}

htmx.defineExtension("sync", {
  /** @param {string} name @param {CustomEvent} event */
  onEvent(name, event) {
    const detail = event.detail ?? {};
    if (name === "htmx:configRequest") {
      const verb = String(detail.verb).toLowerCase();
      if (verb === "get") return;
      const elt = detail.elt;
      // One key per change: kept while the answer is not final, so a retry after a
      // network failure is recognised by the server.
      if (!elt.syncKey) elt.syncKey = uuid();
      detail.headers["Idempotency-Key"] = elt.syncKey;
      detail.headers["X-CSRFToken"] = csrfToken();
      if (isSyncApi(detail.path) && verb !== "delete") detail.headers["Content-Type"] = "application/json";
      if (elt.hasAttribute("sync-optimistic")) optimistic(elt, verb, toObject(detail.parameters));
    } else if (name === "htmx:afterRequest") {
      const elt = detail.elt;
      const xhr = detail.xhr;
      if (!elt || !elt.syncKey) return;
      const status = xhr?.status ?? 0;
      elt.closest("[sync-object]")?.classList.remove("sync-pending");
      if (status >= 200 && status < 300) {
        elt.syncKey = undefined;
        const created = elt.syncCreated;
        if (created) {
          elt.syncCreated = undefined;
          let pk = null;
          try {
            const body = JSON.parse(xhr.responseText);
            pk = body?.pk ?? body?.object?.pk ?? null;
          } catch {
            pk = null;
          }
          const container = created.clone.closest("[sync-stream]");
          // The op may have made the real element already; if not, make it now from the
          // template with the real key (its URLs name the object), and the op fills it.
          const real = pk !== null && container && !container.querySelector(objectSelector(created.model, pk)) ? cloneTemplate(container, created.model, pk) : null;
          if (real) {
            fill(real.clone, created.values);
            created.clone.replaceWith(real.clone);
            htmx.process(real.clone);
          } else {
            created.clone.remove();
          }
        }
        undo.delete(elt);
        return;
      }
      if (status >= 400) elt.syncKey = undefined; // a final no: a new attempt is a new change
      undo.get(elt)?.();
      undo.delete(elt);
      elt.syncCreated = undefined;
      let problem = null;
      try {
        problem = JSON.parse(xhr.responseText);
      } catch {
        problem = { detail: status ? `HTTP ${status}` : "The server could not be reached." };
      }
      elt.dispatchEvent(new CustomEvent("sync:rejected", { bubbles: true, detail: { status, problem } }));
    }
  },

  /**
   * Requests to syncapp's API send JSON.
   * @param {XMLHttpRequest} xhr
   * @param {FormData} parameters
   * @param {Element} elt
   */
  encodeParameters(xhr, parameters, elt) {
    const verb = (elt.getAttribute("hx-post") && "post") || (elt.getAttribute("hx-patch") && "patch") || (elt.getAttribute("hx-put") && "put") || "";
    const path = elt.getAttribute(`hx-${verb}`);
    if (!verb || !path || !isSyncApi(path)) return null;
    xhr.overrideMimeType("text/json");
    return JSON.stringify(toObject(parameters));
  },
});

htmx.onLoad((element) => bind(element));

/** The page's shared client (for status displays and the like). */
export function syncClient() {
  return getClient();
}
