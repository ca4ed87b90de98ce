"""Helpers of test_conditions.py: a sync-client on a blank page of the demo's origin that
records every mutation it makes, and the convergence check every condition ends with.

The page's client lives in ``window.t``: ``client``, ``handle`` (its todo list's stream),
``stream``, ``list``, ``made`` (every mutation id, in order), ``results`` (id -> final
result), ``events`` (``applied``/``conflict``/``rejected`` events, by mutation id),
``resets`` (the stream's ``reset`` events) and ``opsSeen`` (seqs of the ops the stream
applied, to find duplicates and gaps)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import BrowserContext, Page

from tests.browser.conftest import Login
from tests.browser.servers import DemoServer

BLANK = "/accounts/login/"

# Starts a client on the page as window.t, following a todo list of its own (created
# through the client unless ``list`` is given). Returns {list, stream}.
START = """
async ({options, name, list}) => {
  const { SyncClient } = await import('/static/syncapp/sync-client.js');
  const client = new SyncClient({ url: '/sync/', persist: false, ...options });
  const t = { client, made: [], streamOf: {}, results: {}, events: [], resets: [],
              opsSeen: [], statuses: [] };
  window.t = t;
  for (const type of ['applied', 'conflict', 'rejected']) {
    client.on(type, (d) => t.events.push({ type, id: d.mutation.id, error: d.error ?? null }));
  }
  client.on('status', (s) => t.statuses.push(s.state));
  t.mutate = (mutation) => {
    const id = mutation.id ?? crypto.randomUUID();
    t.made.push(id);
    t.streamOf[id] = mutation.stream;
    const result = client.mutate({ ...mutation, id });
    result.then((r) => { t.results[id] = r; });
    return result;
  };
  t.create = (title, extra = {}) => t.mutate({ stream: t.stream, model: 'todos.todo',
    pk: crypto.randomUUID(), op: 'create',
    fields: { list: t.list, title, completed: false, order: 'n' + performance.now(), ...extra } });
  t.update = (pk, fields, baseVersion) => t.mutate({ stream: t.stream, model: 'todos.todo',
    pk, op: 'update', fields, base_version: baseVersion });
  t.find = (title) => t.handle.objects('todos.todo').find((o) => o.fields.title === title) ?? null;
  await client.start();
  if (!list) {
    list = crypto.randomUUID();
    const made = await t.mutate({ stream: 'todos.lists', model: 'todos.todolist', pk: list,
                                  op: 'create', fields: { name } });
    if (made.status !== 'applied') throw new Error('no list: ' + JSON.stringify(made));
  }
  t.list = list;
  t.stream = 'todos.list:' + list;
  t.handle = client.stream(t.stream);
  t.handle.on('reset', (info) => t.resets.push(info));
  t.handle.on('op', (op) => t.opsSeen.push(op.seq));
  return { list, stream: t.stream };
}
"""

TITLES = "() => window.t.handle.objects('todos.todo').map((o) => o.fields.title)"


@dataclass(frozen=True)
class ListInfo:
    list_id: str
    stream: str
    # Uncaught errors of the page (exceptions, unhandled rejections): none is expected.
    errors: list[str] = field(default_factory=list)


async def client_page(
    context: BrowserContext,
    login: Login | None,
    *,
    username: str = "alice",
    list_id: str | None = None,
    page: Page | None = None,
    **options: Any,
) -> tuple[Page, ListInfo]:
    """A blank page of the demo's origin (the login page: a page made with
    ``route.fulfill`` could not open WebSockets to 127.0.0.1) running a recording client
    on a new todo list (or ``list_id``), live. ``page``: use this page of ``context``
    (logged in already) instead of a new one."""
    if page is None:
        page = await context.new_page()
    if login is not None:
        await login(page, username)
    await page.goto(BLANK)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"{error.name}: {error.message}"))
    name = f"conditions {uuid.uuid4().hex[:8]}"
    raw: dict[str, str] = await asyncio.wait_for(
        page.evaluate(START, {"options": options, "name": name, "list": list_id}), 30
    )
    await wait_live(page)
    return page, ListInfo(raw["list"], raw["stream"], errors)


async def wait_live(page: Page, timeout: float = 15_000) -> None:
    await page.wait_for_function(
        "() => window.t && window.t.client.state === 'live'", timeout=timeout
    )


async def wait_title(page: Page, title: str, timeout: float = 15_000) -> None:
    await page.wait_for_function(
        f"(title) => ({TITLES})().includes(title)", arg=title, timeout=timeout
    )


async def settled(page: Page, expression: str, arg: Any = None, timeout: float = 30) -> Any:
    """``page.evaluate`` with a time limit: for expressions that await mutation results,
    which a broken client could leave waiting forever."""
    return await asyncio.wait_for(page.evaluate(expression, arg), timeout)


def hex_id(value: str) -> str:
    """A UUID as SQLite stores Django's UUIDField: 32 hex digits."""
    return uuid.UUID(value).hex


def server_head(server: DemoServer, stream: str) -> tuple[str, int, int]:
    """``(epoch, head, oldest_seq)`` of ``stream`` in the server's database."""
    ((epoch, head, oldest),) = server.sql(
        "select epoch, head, oldest_seq from syncapp_stream where name = ?", (stream,)
    )
    return str(epoch), int(head), int(oldest)


def server_todos(server: DemoServer, list_id: str) -> dict[str, tuple[Any, ...]]:
    """pk -> (version, title, completed, order) of the list's todos, from the database."""
    rows = server.sql(
        'select id, sync_version, title, completed, "order" from todos_todo where list_id = ?',
        (hex_id(list_id),),
    )
    return {
        str(uuid.UUID(str(pk))): (int(version), title, bool(completed), order)
        for pk, version, title, completed, order in rows
    }


async def page_todos(page: Page) -> dict[str, tuple[Any, ...]]:
    """The same, as the page's client shows it."""
    rows = await page.evaluate(
        """() => window.t.handle.objects('todos.todo').map((o) =>
             [String(o.pk), o.version, o.fields.title, o.fields.completed, o.fields.order])"""
    )
    return {
        pk: (version, title, bool(completed), order)
        for pk, version, title, completed, order in rows
    }


def op_count(server: DemoServer, mutation: str) -> int:
    ((count,),) = server.sql(
        "select count(*) from syncapp_op where mutation_id = ?", (hex_id(mutation),)
    )
    return int(count)


async def assert_converged(
    page: Page, server: DemoServer, info: ListInfo, timeout: float = 30_000
) -> dict[str, Any]:
    """The end of every condition: the page settles at the server's head with nothing
    pending, shows exactly the server's todos (versions included), applied every op of
    its stream at most once, and each mutation the page made has its final result: an
    ``applied`` one is in the op log exactly once, and any other was told to the page
    (a ``conflict`` or ``rejected`` event), never dropped in silence. Returns what the
    page recorded (``made``, ``results``, ``events``, ``resets``, ``opsSeen``)."""
    # Every mutation answered first (they move the head), then the head reached.
    await page.wait_for_function(
        """() => window.t.client.pendingCount === 0
                 && window.t.made.every((id) => id in window.t.results)""",
        timeout=timeout,
    )
    epoch, head, _ = server_head(server, info.stream)
    await page.wait_for_function(
        """([epoch, head]) => {
          const at = window.t.handle.position;
          return at !== null && at.epoch === epoch && at.seq === head;
        }""",
        arg=[epoch, head],
        timeout=timeout,
    )
    assert server_head(server, info.stream)[:2] == (epoch, head), "the stream moved meanwhile"
    assert await page_todos(page) == server_todos(server, info.list_id)

    record: dict[str, Any] = await page.evaluate(
        """() => ({ made: window.t.made, results: window.t.results, events: window.t.events,
                    resets: window.t.resets, opsSeen: window.t.opsSeen,
                    streamOf: window.t.streamOf })"""
    )
    assert len(set(record["made"])) == len(record["made"])
    events = {(event["type"], event["id"]) for event in record["events"]}
    for mutation in record["made"]:
        result = record["results"][mutation]
        status = result["status"]
        count = op_count(server, mutation)
        if status == "applied":
            # Exactly once; unless retention trimmed the part of the log it was in.
            trimmed = result["seq"] < server_head(server, record["streamOf"][mutation])[2]
            assert count == (0 if trimmed else 1), (mutation, result, count)
            assert ("applied", mutation) in events, mutation
        elif status == "conflict":
            # lww may apply some fields (one op) while others kept the server's value.
            assert count <= 1, (mutation, result, count)
            assert ("conflict", mutation) in events, mutation
        else:
            assert status in ("rejected", "gone"), result
            assert count == 0, (mutation, result, count)
            assert ("rejected", mutation) in events, mutation
    seen = record["opsSeen"]
    assert len(seen) == len(set(seen)), f"an op was applied twice: {seen}"
    assert info.errors == [], info.errors
    return record
