"""The convergence checker's browser variant (helpers of ``test_chaos_tabs.py``): real
Chromium tabs running ``sync-client.js`` make seeded random mutations on one shared todo
list while a seeded schedule cuts their WebSockets, takes their browser contexts
offline, restarts the demo server and closes the leader tab of a user with two tabs.
Each tab records its history in the format of :mod:`tests.chaos.checker`; the server's
side is read from the demo's database by :func:`tests.chaos.harness.read_server_state`
(run in the demo project, through ``manage.py shell``).

How a tab's history is taken (``RECORDER``, in the page):

- ``invoke``: recorded just before ``client.mutate`` (so before anything is sent);
- ``ack``: the result the mutation's promise resolves with. The queue a closed tab
  left in IndexedDB is answered too: the tab that took over the connection records the
  results it gets for it (``"inherited": true``), and a new tab that adopted it at
  start does (``"adopted": true``), so those mutations are not left unknown;
- ``op`` / ``snapshot``: the stream's ``StreamState.applyOps`` and ``loadSnapshot`` are
  wrapped, so every op applied to the tab's authoritative state is recorded, whether it
  came over the leader's connection, from the leader tab over the BroadcastChannel, or
  from a follower's HTTP catch-up; a snapshot restored from IndexedDB says
  ``"source": "cache"``;
- ``reset``: the stream's ``reset`` event;
- ``final``: the authoritative state (``base``, not the optimistic view) and position.

A closed tab's history ends with ``{"type": "closed"}`` (no final state is owed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page, WebSocketRoute

from tests.browser.conditions import BLANK, server_head
from tests.browser.servers import DemoServer
from tests.browser.test_conditions import Relay
from tests.browser.test_list_page import PENDING_IDS
from tests.chaos.checker import ClientHistory, LogOp, ServerState, key
from tests.chaos.schedule import Fault

MODEL = "todos.todo"
# Enough attempts to outlast a slow restart on a loaded machine.
BACKOFF = {"baseMs": 200, "capMs": 1000, "maxAttempts": 10_000}

# Starts a recording client on the page as window.h, following the todo list ``list``
# (created through this client first when null). Returns the list's id.
RECORDER = """
async ({name, list, options}) => {
  const { SyncClient } = await import('/static/syncapp/sync-client.js');
  const client = new SyncClient({ url: '/sync/', persist: true, ...options });
  const h = { name, client, records: [], mine: new Set(), answered: new Set(), n: 0,
              frozen: false, restoring: 0 };
  window.h = h;
  const rec = (record) => { if (!h.frozen) h.records.push({ ...record, t: Date.now() / 1000 }); };
  h.rec = rec;
  const errorOf = (e) => (e ? { code: e.code ?? null, fields: e.fields ?? null } : null);
  const ackOf = (r) => ({ type: 'ack', id: r.id, status: r.status, seq: r.seq ?? null,
                          version: r.version ?? null, error: errorOf(r.error) });
  // Results of mutations this tab adopted from IndexedDB (made by a tab since closed).
  const settle = client.settle.bind(client);
  client.settle = (result) => {
    const adopted = client.made.get(result.id);
    const own = h.mine.has(result.id) || h.answered.has(result.id);
    if (adopted && adopted.stream === h.stream && !own) {
      h.answered.add(result.id);
      rec({ ...ackOf(result), adopted: true });
    }
    return settle(result);
  };
  // Results of the queue a tab that became leader inherited from IndexedDB (left by the
  // closed leader tab): it sends them, and hears their results in finish().
  h.inherited = new Set();
  const lead = client.lead.bind(client);
  client.lead = async () => {
    await lead();
    for (const id of client.outbox.keys()) if (!client.made.has(id)) h.inherited.add(id);
  };
  const finish = client.finish.bind(client);
  client.finish = (result) => {
    const mutation = client.outbox.get(result.id);
    if (h.inherited.has(result.id) && mutation?.stream === h.stream && !h.answered.has(result.id)) {
      h.answered.add(result.id);
      rec({ ...ackOf(result), inherited: true });
    }
    return finish(result);
  };
  const restore = client.restore.bind(client);
  client.restore = async (handle) => {
    h.restoring += 1;
    try { return await restore(handle); } finally { h.restoring -= 1; }
  };
  client.on('status', (s) => {
    if (s.state !== h.lastState) rec({ type: 'note', what: 'status', state: s.state,
                                       transport: s.transport ?? null, leader: client.isLeader });
    h.lastState = s.state;
  });
  // The stream's state is instrumented before start() when the list is known: start()
  // restores it from IndexedDB (with the queue a closed tab left there).
  const instrument = () => {
    h.stream = 'todos.list:' + list;
    h.list = list;
    const handle = client.handleOf(h.stream);
    h.handle = handle;
    const state = handle.state;
    const applyOps = state.applyOps.bind(state);
    state.applyOps = (ops) => {
      const result = applyOps(ops);
      for (const op of result.applied) {
        rec({ type: 'op', epoch: op.epoch, seq: op.seq, model: op.model, pk: String(op.pk),
              op: op.op, mutation: op.mutation ?? null });
      }
      if (result.stop) rec({ type: 'note', what: 'stop', why: result.stop, at: state.seq });
      return result;
    };
    const loadSnapshot = state.loadSnapshot.bind(state);
    state.loadSnapshot = (snapshot) => {
      rec({ type: 'snapshot', epoch: snapshot.epoch, seq: snapshot.seq,
            source: h.restoring ? 'cache' : 'server' });
      return loadSnapshot(snapshot);
    };
    handle.on('reset', (info) => rec({ type: 'reset', epoch: info.epoch ?? null,
                                        reason: info.reason ?? null }));
    return handle;
  };
  if (list) instrument();
  await client.start();
  if (!list) {
    list = crypto.randomUUID();
    const made = await client.mutate({ stream: 'todos.lists', model: 'todos.todolist', pk: list,
                                       op: 'create', fields: { name: 'chaos ' + name } });
    if (made.status !== 'applied') throw new Error('no list: ' + JSON.stringify(made));
    instrument();
  }
  const handle = h.handle;
  const state = handle.state;
  client.stream(h.stream);

  h.mutate = (m) => {
    const id = crypto.randomUUID();
    const mutation = { stream: h.stream, model: 'todos.todo', fields: {}, ...m };
    rec({ type: 'invoke', id, mutation });
    h.mine.add(id);
    client.mutate({ ...mutation, id }).then((r) => { h.answered.add(id); rec(ackOf(r)); });
    return id;
  };
  // A fractional-index-like key from a random number: reorders never collide in practice.
  const orderKey = (r) => 'k' + String(Math.floor(r * 1e9)).padStart(9, '0');
  // One seeded random mutation: create, toggle, rename (version-checked: the title is
  // `manual`), reorder or delete, of a todo of this tab's optimistic view.
  h.step = ([a, b, c]) => {
    if (h.frozen) return null;
    const todos = handle.objects('todos.todo');
    const pick = todos.length ? todos[Math.floor(b * todos.length)] : null;
    h.n += 1;
    const label = h.name + ' ' + h.n;
    if (!pick || a < 0.3 || (todos.length < 4 && a < 0.5)) {
      const fields = { list: h.list, title: label, completed: false, order: orderKey(c) };
      return h.mutate({ op: 'create', pk: crypto.randomUUID(), fields });
    }
    const pk = String(pick.pk);
    if (a < 0.55) {
      return h.mutate({ op: 'update', pk, fields: { completed: !pick.fields.completed } });
    }
    if (a < 0.75) {
      const rename = { op: 'update', pk, fields: { title: label } };
      if (typeof pick.version === 'number') rename.base_version = pick.version;
      return h.mutate(rename);
    }
    if (a < 0.9) return h.mutate({ op: 'update', pk, fields: { order: orderKey(c) } });
    return h.mutate({ op: 'delete', pk });
  };
  h.drained = () => client.pendingCount === 0 && client.outbox.size === 0
    && [...h.mine, ...h.inherited].every((id) => h.answered.has(id));
  h.final = () => ({
    type: 'final', epoch: state.epoch, seq: state.seq, t: Date.now() / 1000,
    objects: [...state.base.values()].map((o) => ({ model: o.model, pk: String(o.pk),
                                                     version: o.version, fields: o.fields })),
  });
  return list;
}
"""

# Run in the demo project (``manage.py shell -c``): the server's side of the check, as
# JSON in the file named by {out!r}.
DUMP = """
import json
from tests.chaos.harness import read_server_state
s = read_server_state({stream!r}, set())
data = {{
    "stream": s.stream, "epoch": s.epoch, "head": s.head,
    "ops": [vars(op) for op in s.ops],
    "objects": [[m, pk, v, f] for (m, pk), (v, f) in s.objects.items()],
    "conflicts": sorted(s.conflicts),
    "counter_fields": {{k: sorted(v) for k, v in s.counter_fields.items()}},
    "manual_fields": {{k: sorted(v) for k, v in s.manual_fields.items()}},
}}
open({out!r}, "w").write(json.dumps(data))
"""


def read_server(server: DemoServer, stream: str, workdir: Path) -> ServerState:
    """The stream's log, head, objects and conflict rows from the demo's database, read
    by the harness's own reader inside the demo project (same encoding as the wire).
    No setup ops: the list's stream starts empty and only the tabs write to it."""
    out = workdir / "server.json"
    server.manage("shell", "-c", DUMP.format(stream=stream, out=str(out)))
    data = json.loads(out.read_text())
    return ServerState(
        stream=data["stream"],
        epoch=data["epoch"],
        head=data["head"],
        ops=[LogOp(**op) for op in data["ops"]],
        objects={key(m, pk): (v, f) for m, pk, v, f in data["objects"]},
        conflicts={(str(m), str(name)) for m, name in data["conflicts"]},
        setup_seqs=set(),
        counter_fields={k: frozenset(v) for k, v in data["counter_fields"].items()},
        manual_fields={k: frozenset(v) for k, v in data["manual_fields"].items()},
    )


class FaultyLink(Relay):
    """The context's WebSocket route: forwards frames (``Relay``), can cut the current
    connection, and while ``blocked`` closes every new one at once (offline)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = False

    def __call__(self, ws: WebSocketRoute) -> None:
        if self.blocked:
            self.tasks.add(asyncio.ensure_future(ws.close()))
            return
        super().__call__(ws)

    async def cut_all(self) -> None:
        """Close every connection still open (closing a closed one is harmless)."""
        for index in range(len(self.routes)):
            # Closing a connection the page or the server closed already may raise.
            with contextlib.suppress(Exception):
                await self.cut(index)


@dataclass
class Tab:
    name: str
    user: str
    context: BrowserContext
    link: FaultyLink
    page: Page
    rng: random.Random
    records: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    task: asyncio.Task[None] | None = None

    async def step(self) -> None:
        draw = [self.rng.random() for _ in range(3)]
        await asyncio.wait_for(self.page.evaluate("(r) => window.h.step(r)", draw), 20)

    async def take_records(self, *, leave: bool = False) -> list[dict[str, Any]]:
        """What the page recorded; recording stops (``frozen``) from now on. ``leave``:
        the client also lets go of its connection and of the tabs' lock, in the same
        task (as ``pagehide`` does when the tab closes), so no result reaches the tab
        after its history was taken: what it has not heard of, the next leader sends."""
        records: list[dict[str, Any]] = await asyncio.wait_for(
            self.page.evaluate(
                """(leave) => {
                  window.h.frozen = true;
                  if (leave) window.h.client.suspend();
                  return window.h.records;
                }""",
                leave,
            ),
            20,
        )
        return records

    def history(self) -> ClientHistory:
        return ClientHistory(self.name, self.records)


async def open_tab(
    name: str,
    user: str,
    context: BrowserContext,
    link: FaultyLink,
    list_id: str | None,
    seed: int,
    *,
    page: Page | None = None,
) -> tuple[Tab, str]:
    """A tab of ``context`` (logged in already) with a recording client on the list."""
    if page is None:
        page = await context.new_page()
    await page.goto(BLANK)
    list_id = await asyncio.wait_for(
        page.evaluate(RECORDER, {"name": name, "list": list_id, "options": {"backoff": BACKOFF}}),
        60,
    )
    tab = Tab(name, user, context, link, page, random.Random(seed))
    await page.wait_for_function(
        "() => window.h.handle.position !== null", timeout=60_000, polling=100
    )
    return tab, str(list_id)


def schedule(seed: int, duration: float, contexts: list[str], two_tabs: str) -> list[Fault]:
    """The faults of a run: each kind at least once, in a seeded order, in slices of
    the run; ``disconnect`` and ``offline`` hit a seeded context (all its tabs: they
    share its connection), ``close_leader`` the context ``two_tabs``."""
    rng = random.Random(seed)
    kinds = ["disconnect", "offline", "restart_server", "close_leader", "disconnect", "offline"]
    rng.shuffle(kinds)
    start, end = 2.0, duration - 3.0
    slot = (end - start) / len(kinds)
    faults = []
    for index, kind in enumerate(kinds):
        at = round(start + index * slot + rng.uniform(0, slot / 3), 2)
        if kind in ("disconnect", "offline"):
            target = rng.choice(contexts)
        else:
            target = two_tabs if kind == "close_leader" else "server"
        length = {"offline": rng.uniform(2.0, 5.0), "restart_server": rng.uniform(0.5, 2.0)}
        faults.append(Fault(at, kind, target, round(length.get(kind, 0.0), 2)))
    return faults


async def wait_until(what: str, done: Any, timeout: float) -> None:
    """Poll the coroutine function ``done`` until it is true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.25)


async def pending_ids(page: Page) -> list[str]:
    """The mutations queued in the context's IndexedDB."""
    ids: list[str] = await asyncio.wait_for(page.evaluate(PENDING_IDS), 20)
    return ids


def head_of(server: DemoServer, stream: str) -> tuple[str, int]:
    epoch, head, _ = server_head(server, stream)
    return epoch, head
