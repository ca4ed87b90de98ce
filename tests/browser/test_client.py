"""sync-client.js in Chromium against a real daphne: transports and their fallbacks,
heartbeats, a server restart, and one connection shared by the tabs of an origin.

Each test drives the client on a blank page of the demo's origin (so cookies, CSRF and
same-origin WebSockets are real), and writes through another client or the server."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, WebSocketRoute

from tests.browser.conftest import Login, NewContext
from tests.browser.servers import DemoServer

BLANK = "/accounts/login/"

# Starts a client on the page as window.t: {client, handle, log, stream, list}.
START = """
async ({options, wantStream}) => {
  const { SyncClient } = await import('/static/syncapp/sync-client.js');
  const lists = await (await fetch('/sync/api/streams/todos.lists/snapshot/')).json();
  const list = lists.objects.find((o) => o.fields.name === 'Groceries').pk;
  const stream = wantStream ?? ('todos.list:' + list);
  const client = new SyncClient({ url: '/sync/', ...options });
  const log = [];
  client.on('status', (s) => log.push(s));
  const handle = client.stream(stream);
  window.t = { client, handle, log, stream, list };
  await client.start();
  return { stream, list };
}
"""

TITLES = "() => window.t.handle.objects('todos.todo').map((o) => o.fields.title)"


async def blank_page(context: BrowserContext, login: Login | None = None) -> Page:
    """A page of the demo's origin without a client of its own: the login page, which
    renders for signed-in users too. (A page made up with ``route.fulfill`` would not do:
    Chromium's local network access checks refuse its WebSockets to 127.0.0.1.)"""
    page = await context.new_page()
    if login is not None:
        await login(page, "alice")
    await page.goto(BLANK)
    return page


async def start(page: Page, **options: Any) -> dict[str, str]:
    result: dict[str, str] = await page.evaluate(START, {"options": options, "wantStream": None})
    return result


async def wait_state(page: Page, state: str, transport: str | None = None) -> None:
    await page.wait_for_function(
        "([state, transport]) => window.t && window.t.client.state === state"
        " && (transport === null || window.t.client.transport === transport)",
        arg=[state, transport],
    )


async def wait_title(page: Page, title: str, timeout: float = 15000) -> None:
    await page.wait_for_function(
        f"(title) => ({TITLES})().includes(title)", arg=title, timeout=timeout
    )


async def create_todo(page: Page, title: str) -> dict[str, Any]:
    """Create a todo through this page's client; returns the result."""
    result: dict[str, Any] = await page.evaluate(
        """(title) => window.t.client.create(window.t.stream, 'todos.todo', crypto.randomUUID(),
             {list: window.t.list, title, completed: false, order: 'n' + Date.now()})""",
        title,
    )
    return result


async def refuse(ws: WebSocketRoute) -> None:
    """A WebSocket route that closes every connection: WebSockets are blocked."""
    await ws.close()


async def writer(new_context: NewContext, login: Login) -> Page:
    page = await blank_page(await new_context(), login)
    await start(page, persist=False)
    await wait_state(page, "live", "websocket")
    return page


@pytest.mark.parametrize(
    ("blocked", "expected"),
    [((), "websocket"), (("websocket",), "sse"), (("websocket", "sse"), "longpoll")],
)
async def test_falls_back_when_transports_are_blocked_and_keeps_syncing(
    new_context: NewContext, login: Login, blocked: tuple[str, ...], expected: str
) -> None:
    context = await new_context()
    if "websocket" in blocked:
        await context.route_web_socket("**/sync/ws/**", refuse)
    if "sse" in blocked:
        await context.route("**/events/**", lambda route: route.abort())
    page = await blank_page(context, login)
    await start(page, persist=False)
    await wait_state(page, "live", expected)

    other = await writer(new_context, login)
    title = f"from the other user via {expected} {uuid.uuid4().hex[:6]}"
    await create_todo(other, title)
    await wait_title(page, title)

    # And this page's own edits go through the fallback too.
    mine = f"mine via {expected} {uuid.uuid4().hex[:6]}"
    result = await create_todo(page, mine)
    assert result["status"] == "applied"
    await wait_title(other, mine)


async def test_a_dead_connection_is_noticed_within_two_heartbeats(
    new_context: NewContext, login: Login
) -> None:
    context = await new_context()
    routes: list[WebSocketRoute] = []
    mute = {"on": False}

    def handler(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        # Forward the server's frames until the test mutes it: a half-dead connection
        # the browser still thinks is open.
        server.on_message(lambda message: None if mute["on"] else ws.send(message))
        routes.append(ws)

    await context.route_web_socket("**/sync/ws/**", handler)
    page = await blank_page(context, login)
    await start(page, persist=False, heartbeatMs=500)
    await wait_state(page, "live", "websocket")
    mute["on"] = True
    muted_at = time.monotonic()
    await page.wait_for_function("() => window.t.client.state !== 'live'", timeout=5000)
    noticed = time.monotonic() - muted_at
    print(f"dead connection noticed after {noticed * 1000:.0f} ms (heartbeat 500 ms)")
    mute["on"] = False
    await wait_state(page, "live", "websocket")
    assert len(routes) >= 2


async def test_a_server_restart_loses_nothing(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    page = await blank_page(await new_context(), login)
    # Enough attempts to outlast a slow restart on a loaded machine.
    info = await start(
        page, persist=False, backoff={"baseMs": 200, "capMs": 1000, "maxAttempts": 100}
    )
    await wait_state(page, "live", "websocket")
    before = await create_todo(page, "before the restart")
    assert before["status"] == "applied"

    await asyncio.to_thread(demo_server.stop)
    await page.wait_for_function("() => window.t.client.state !== 'live'")
    # Written while the server is down: the page must get them when it resumes.
    titles = [f"while down {n}" for n in range(3)]
    script = (
        "from demo_project.todos.models import Todo;"
        f"[Todo.objects.create(list_id={info['list']!r}, title=t, order='z'+str(i))"
        f" for i, t in enumerate({titles!r})]"
    )
    await asyncio.to_thread(demo_server.manage, "shell", "-c", script)
    await asyncio.to_thread(demo_server.start)
    await wait_state(page, "live", "websocket")
    for title in titles:
        await wait_title(page, title)
    after = await create_todo(page, "after the restart")
    assert after["status"] == "applied"

    # Exactly what the log has, in its order, each op once.
    seqs = [
        row[0]
        for row in demo_server.sql(
            "select o.seq from syncapp_op o join syncapp_stream s on s.id = o.stream_id"
            " where s.name = ? order by o.seq",
            (info["stream"],),
        )
    ]
    # The ack can come before the op: wait for the page to reach the log's head.
    await page.wait_for_function("(head) => window.t.handle.position?.seq === head", arg=seqs[-1])
    server_titles = {
        row[0]
        for row in demo_server.sql(
            "select title from todos_todo where list_id = ?", (info["list"].replace("-", ""),)
        )
    }
    assert set(await page.evaluate(TITLES)) == server_titles


async def test_tabs_share_one_websocket_and_hand_over_when_the_leader_closes(
    new_context: NewContext, login: Login
) -> None:
    context = await new_context()
    sockets: list[str] = []
    first = await blank_page(context, login)
    first.on("websocket", lambda ws: sockets.append("first"))
    await start(first, persist=False)
    await wait_state(first, "live", "websocket")

    second = await context.new_page()
    second.on("websocket", lambda ws: sockets.append("second"))
    await second.goto(BLANK)
    await start(second, persist=False)
    await wait_state(second, "live", "websocket")  # the leader's status, shared
    assert await first.evaluate("() => window.t.client.isLeader")
    assert not await second.evaluate("() => window.t.client.isLeader")
    assert sockets == ["first"]

    # A follower's edit goes through the leader's socket; both tabs see it.
    result = await create_todo(second, "made in the second tab")
    assert result["status"] == "applied"
    await wait_title(first, "made in the second tab")

    await first.close()
    await second.wait_for_function("() => window.t.client.isLeader")
    await wait_state(second, "live", "websocket")
    assert sockets == ["first", "second"]
    result = await create_todo(second, "after the handover")
    assert result["status"] == "applied"
    await wait_title(second, "after the handover")


async def test_a_reset_reaches_the_follower_tabs_too(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    """The leader's stream is reset: the follower loads the new snapshot the leader
    relays and hears the reset (its ``reset`` event), as a leader would."""
    context = await new_context()
    leader = await blank_page(context, login)
    info = await start(leader, persist=False)
    await wait_state(leader, "live", "websocket")
    follower = await context.new_page()
    await follower.goto(BLANK)
    await start(follower, persist=False)
    await wait_state(follower, "live", "websocket")
    assert not await follower.evaluate("() => window.t.client.isLeader")
    await follower.evaluate(
        """() => {
             window.t.resets = [];
             window.t.handle.on('reset', (info) => window.t.resets.push(info));
           }"""
    )
    await create_todo(leader, "before the reset")
    await wait_title(follower, "before the reset")
    # The leader holds the position (a follower may not have one yet on a loaded machine).
    old = await leader.evaluate("() => window.t.handle.position")

    await asyncio.to_thread(demo_server.manage, "syncapp_reset_stream", info["stream"])
    other = await writer(new_context, login)
    await create_todo(other, "after the reset")
    await wait_title(follower, "after the reset")
    await follower.wait_for_function("() => window.t.resets.length > 0")
    await follower.wait_for_function(
        "(old) => window.t.handle.position && window.t.handle.position.epoch !== old",
        arg=old["epoch"],
    )


async def test_bad_input_is_refused_before_it_is_queued(
    new_context: NewContext, login: Login
) -> None:
    page = await blank_page(await new_context(), login)
    await start(page, persist=False)
    errors = await page.evaluate(
        """() => {
          const attempts = [
            {model: 'todos.todo', pk: 'x', op: 'update'},
            {stream: window.t.stream, model: 'todos.todo', op: 'update'},
            {stream: window.t.stream, model: 'todos.todo', pk: 'x', op: 'upsert'},
          ];
          return attempts.map((m) => { try { window.t.client.mutate(m); return null; }
                                        catch (e) { return e.name + ': ' + e.message; } });
        }"""
    )
    assert errors == [
        "TypeError: mutation.stream must be a non-empty string",
        "TypeError: mutation.pk is required: clients choose the keys of what they create",
        'TypeError: unknown op "upsert"',
    ]
    assert await page.evaluate("() => window.t.client.pendingCount") == 0


async def test_after_the_attempt_limit_the_state_is_offline_until_asked(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    page = await blank_page(await new_context(), login)
    await start(page, persist=False, backoff={"baseMs": 50, "capMs": 200, "maxAttempts": 3})
    await wait_state(page, "live", "websocket")
    await asyncio.to_thread(demo_server.stop)
    await wait_state(page, "offline")
    attempts = await page.evaluate("() => Math.max(...window.t.log.map((s) => s.attempt))")
    assert attempts == 3
    # Offline waits: with the server back, nothing happens until the page asks.
    await asyncio.to_thread(demo_server.start)
    await page.wait_for_timeout(1000)
    assert await page.evaluate("() => window.t.client.state") == "offline"
    await page.evaluate("() => window.t.client.retryNow()")
    await wait_state(page, "live", "websocket")


async def test_a_lost_session_asks_the_page_to_log_in_instead_of_retrying(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    context = await new_context()
    page = await blank_page(context, login)
    await start(page, persist=False, backoff={"baseMs": 100, "capMs": 500, "maxAttempts": 100})
    await page.evaluate(
        "() => { window.t.auth = []; window.t.client.on('auth', (d) => window.t.auth.push(d)); }"
    )
    await wait_state(page, "live", "websocket")
    opened: list[str] = []
    page.on("websocket", lambda ws: opened.append(ws.url))
    await context.clear_cookies()  # logged out (the session expired, say)
    await asyncio.to_thread(demo_server.restart)
    await page.wait_for_function("() => window.t.auth.length > 0")
    opened_then = len(opened)
    await page.wait_for_timeout(2000)
    # Refused, and told the page; no loop of blind retries after that.
    assert len(opened) == opened_then, opened
    assert await page.evaluate("() => window.t.auth.length") == 1


async def test_a_reset_history_loads_a_snapshot_and_goes_on(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    page = await blank_page(await new_context(), login)
    info = await start(page, persist=False)
    await wait_state(page, "live", "websocket")
    await create_todo(page, "before the reset")
    await wait_title(page, "before the reset")  # the ack can come before the snapshot
    # The title shows the optimistic create; the position comes with the stream's ops.
    await page.wait_for_function("() => window.t.handle.position")
    old = await page.evaluate("() => window.t.handle.position")
    await asyncio.to_thread(demo_server.manage, "syncapp_reset_stream", info["stream"])
    other = await writer(new_context, login)
    await create_todo(other, "after the reset")
    await wait_title(page, "after the reset")
    await page.wait_for_function(
        "(old) => window.t.handle.position && window.t.handle.position.epoch !== old",
        arg=old["epoch"],
    )
    titles = set(await page.evaluate(TITLES))
    assert {"before the reset", "after the reset"} <= titles
    # Still live on the new epoch: this page's edits land and come back.
    result = await create_todo(page, "on the new epoch")
    assert result["status"] == "applied"
    await wait_title(other, "on the new epoch")


async def test_mutations_made_in_one_tick_go_in_one_frame(
    new_context: NewContext, login: Login
) -> None:
    context = await new_context()
    frames: list[dict[str, Any]] = []

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "mutate":
                frames.append(frame)
            server.send(message)

        ws.on_message(from_page)

    await context.route_web_socket("**/sync/ws/**", route)
    page = await blank_page(context, login)
    await start(page, persist=False, batchWindowMs=0)
    await wait_state(page, "live", "websocket")
    results = await page.evaluate(
        """() => Promise.all([1, 2, 3].map((n) => window.t.client.create(window.t.stream,
             'todos.todo', crypto.randomUUID(),
             {list: window.t.list, title: 'batched ' + n, completed: false, order: 'b' + n})))"""
    )
    assert [r["status"] for r in results] == ["applied"] * 3
    assert len(frames) == 1
    assert [m["fields"]["title"] for m in frames[0]["mutations"]] == [
        "batched 1",
        "batched 2",
        "batched 3",
    ]


async def test_a_fallback_moves_back_up_when_the_websocket_works_again(
    new_context: NewContext, login: Login
) -> None:
    context = await new_context()
    blocked = {"on": True}

    async def route(ws: WebSocketRoute) -> None:
        if blocked["on"]:
            await ws.close()
        else:
            ws.connect_to_server()  # and pass every frame through

    await context.route_web_socket("**/sync/ws/**", route)
    page = await blank_page(context, login)
    await start(page, persist=False, upgradeAfterMs=500)
    await wait_state(page, "live", "sse")
    await page.wait_for_timeout(1500)  # upgrade probes fail meanwhile: it stays on SSE
    assert await page.evaluate("() => window.t.client.transport") == "sse"
    blocked["on"] = False
    await wait_state(page, "live", "websocket")
    other = await writer(new_context, login)
    await create_todo(other, "after the upgrade")
    await wait_title(page, "after the upgrade")


@pytest.mark.parametrize(
    ("code", "retry_after_ms", "refusals", "waits"),
    [("rate_limited", 300, 1, [0.3]), ("internal_error", None, 2, [1.0, 2.0])],
    ids=["rate_limited", "internal_error"],
)
async def test_a_refused_subscribe_is_sent_again_after_the_wait(
    new_context: NewContext,
    login: Login,
    code: str,
    retry_after_ms: int | None,
    refusals: int,
    waits: list[float],
) -> None:
    """The per-user read limit refuses a subscribe with ``rate_limited`` and
    ``retry_after_ms``: the client asks again after that wait. A server fault
    (``internal_error``) is asked again after a delay that doubles. The stream loads."""
    context = await new_context()
    subscribes: list[float] = []

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "subscribe" and frame["stream"].startswith("todos.list:"):
                subscribes.append(time.monotonic())
                if len(subscribes) <= refusals:
                    refusal = {
                        "type": "error",
                        "code": code,
                        "message": "refused",
                        "stream": frame["stream"],
                        "ref": frame.get("ref"),
                    }
                    if retry_after_ms is not None:
                        refusal["retry_after_ms"] = retry_after_ms
                    ws.send(json.dumps(refusal))
                    return
            server.send(message)

        ws.on_message(from_page)

    await context.route_web_socket("**/sync/ws/**", route)
    page = await blank_page(context, login)
    await start(page, persist=False)
    await wait_state(page, "live", "websocket")
    await page.wait_for_function("() => window.t.handle.position !== null", timeout=15_000)
    assert len(subscribes) == refusals + 1
    gaps = [later - earlier for earlier, later in itertools.pairwise(subscribes)]
    assert all(gap >= wait for gap, wait in zip(gaps, waits, strict=True)), gaps
