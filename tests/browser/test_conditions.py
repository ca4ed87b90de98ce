"""sync-client.js under hostile client conditions, in Chromium against a real daphne:
rapid reconnects, a slow 3G link, offline past the log's retention, the system clock
moved an hour, and the page put to sleep. Each test ends with ``assert_converged``: the
page shows exactly the server's state at its head, each of its mutations is in the op log
exactly once or was told to the page as a conflict or rejection, and nothing waits.

Mechanics (checked, not assumed): Chromium's network emulation (CDP) slows HTTP but not
WebSocket frames, so the socket is slowed by a Playwright route in between (``SlowLink``);
``Page.setWebLifecycleState`` does not freeze a visible headless page (its timers kept
running), so sleep is ``Debugger.pause``, which stops every script and timer of the page
while the network keeps queueing its frames."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import pytest
from playwright.async_api import CDPSession, Page, WebSocketRoute

from tests.browser.conditions import (
    ListInfo,
    assert_converged,
    client_page,
    page_todos,
    server_head,
    settled,
    wait_live,
    wait_title,
)
from tests.browser.conftest import Login, NewContext
from tests.browser.servers import DemoServer
from tests.browser.test_list_page import PENDING_IDS

# Chromium's "3G" preset, as DevTools defines it: 1.6 Mbit/s down, 750 kbit/s up.
DOWN_BYTES_PER_S = 1.6 * 1024 * 1024 / 8 * 0.9
UP_BYTES_PER_S = 750 * 1024 / 8 * 0.9
LATENCY_MS = 500


async def writer(new_context: NewContext, login: Login, info: ListInfo, **options: Any) -> Page:
    """Bob, on another device, following the same list."""
    page, _ = await client_page(
        await new_context(), login, username="bob", list_id=info.list_id, **options
    )
    return page


class Relay:
    """A Playwright route between the page's WebSocket and the server that forwards
    every frame, remembers each connection and can cut or silence them."""

    def __init__(self) -> None:
        self.routes: list[WebSocketRoute] = []
        self.servers: list[WebSocketRoute] = []
        self.welcomed: list[asyncio.Event] = []
        self.silenced: set[int] = set()  # connections whose frames are dropped
        self.sent: list[dict[str, Any]] = []
        self.storm_left = 0
        self.storm_over = asyncio.Event()
        self.tasks: set[asyncio.Future[None]] = set()

    def __call__(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        welcomed = asyncio.Event()
        index = len(self.routes)

        def from_server(message: str | bytes) -> None:
            if index in self.silenced:
                return
            if '"welcome"' in str(message):
                welcomed.set()
                if self.storm_left:
                    self.storm_left -= 1
                    last = not self.storm_left
                    delay = random.uniform(0.01, 0.05)
                    asyncio.get_running_loop().call_later(delay, self._cut_soon, ws, server, last)
            self.deliver(ws, message, down=True)

        def from_page(message: str | bytes) -> None:
            if index in self.silenced:
                return
            self.sent.append(json.loads(message))
            self.deliver(server, message, down=False)

        server.on_message(from_server)
        ws.on_message(from_page)
        self.routes.append(ws)
        self.servers.append(server)
        self.welcomed.append(welcomed)

    def deliver(self, to: WebSocketRoute, message: str | bytes, *, down: bool) -> None:
        to.send(message)

    def storm(self, cycles: int) -> None:
        """Cut the connection the client is on, and each of the next ``cycles - 1`` ones
        10 to 50 ms after the server welcomed them."""
        self.storm_left = cycles - 1
        self._cut_soon(self.routes[-1], self.servers[-1], cycles == 1)

    def _cut_soon(self, ws: WebSocketRoute, server: WebSocketRoute, last: bool) -> None:
        async def cut() -> None:
            await ws.close()
            await server.close()
            if last:
                self.storm_over.set()

        self.tasks.add(asyncio.ensure_future(cut()))

    async def next_welcomed(self, after: int, timeout: float = 15.0) -> int:
        """The index of the first connection after ``after`` that the server welcomed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(after + 1, len(self.routes)):
                if self.welcomed[index].is_set():
                    return index
            await asyncio.sleep(0.005)
        raise AssertionError(f"no connection was welcomed after #{after} in {timeout} s")

    async def cut(self, index: int = -1) -> None:
        """Close both sides of a connection (awaited: the close must happen)."""
        await self.routes[index].close()
        await self.servers[index].close()


class SlowLink(Relay):
    """A relay with ``LATENCY_MS`` of round trip (half each way) and 3G throughput:
    each direction sends one frame after the other at its rate, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.free_at = {True: 0.0, False: 0.0}

    def deliver(self, to: WebSocketRoute, message: str | bytes, *, down: bool) -> None:
        loop = asyncio.get_running_loop()
        rate = DOWN_BYTES_PER_S if down else UP_BYTES_PER_S
        start = max(loop.time(), self.free_at[down])
        self.free_at[down] = start + len(message) / rate
        loop.call_at(self.free_at[down] + LATENCY_MS / 2000, to.send, message)


async def emulate_3g(session: CDPSession) -> None:
    await session.send("Network.enable")
    await session.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": LATENCY_MS,
            "downloadThroughput": DOWN_BYTES_PER_S,
            "uploadThroughput": UP_BYTES_PER_S,
            "connectionType": "cellular3g",
        },
    )


async def test_ten_reconnects_in_a_second_while_editing_lose_nothing(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    context = await new_context()
    relay = Relay()
    await context.route_web_socket("**/sync/ws/**", relay)
    page, info = await client_page(context, login)
    bob = await writer(new_context, login, info)
    await settled(page, "() => window.t.create('before the storm')")

    async def bob_writes() -> None:
        for n in range(10):
            await settled(bob, "(n) => window.t.create('bob ' + n)", n)

    bob_task = asyncio.create_task(bob_writes())
    # The page edits every 20 ms meanwhile: edits go out as connections are cut, in
    # flight, unanswered, or not yet sent.
    await page.evaluate(
        """() => {
          let n = 0;
          const first = window.t.find('before the storm');
          window.t.editing = setInterval(() => {
            window.t.create('storm ' + n);
            window.t.update(first.pk, {completed: n % 2 === 0});
            n += 1;
          }, 20);
        }"""
    )
    started = time.monotonic()
    relay.storm(10)
    await asyncio.wait_for(relay.storm_over.wait(), timeout=30)
    elapsed = time.monotonic() - started
    made = await page.evaluate(
        "() => { clearInterval(window.t.editing); return window.t.made.length; }"
    )
    await bob_task
    print(f"10 connect/disconnect cycles in {elapsed * 1000:.0f} ms, {made} mutations made")

    await wait_live(page)
    record = await assert_converged(page, demo_server, info)
    assert len(relay.routes) >= 11
    assert len(record["made"]) == made
    storm = (made - 2) // 2
    assert storm >= 10, made  # at least one create and one toggle per cycle
    titles = {todo[1] for todo in (await page_todos(page)).values()}
    assert {f"storm {n}" for n in range(storm)} | {f"bob {n}" for n in range(10)} <= titles
    # The toggles were sent in order with rising clocks: the last one won.
    last = await page.evaluate("() => window.t.find('before the storm').fields.completed")
    assert last is ((storm - 1) % 2 == 0)
    # Each reconnect resumed from its position: no op was applied twice, none skipped.
    seen = record["opsSeen"]
    assert seen == sorted(seen)


@pytest.mark.parametrize("transport", ["websocket", "longpoll"])
async def test_500ms_latency_and_3g_throughput_converge(
    new_context: NewContext, login: Login, demo_server: DemoServer, transport: str
) -> None:
    context = await new_context()
    link = SlowLink()
    await context.route_web_socket("**/sync/ws/**", link)
    page = await context.new_page()
    await login(page, "alice")
    session = await context.new_cdp_session(page)
    await emulate_3g(session)  # HTTP: the login page, scripts, probes, long-polls, POSTs
    posted: list[int] = []  # mutations per POST api/mutations/
    page.on(
        "request",
        lambda request: (
            posted.append(len(json.loads(request.post_data or "{}")["mutations"]))
            if request.method == "POST" and request.url.endswith("/api/mutations/")
            else None
        ),
    )
    page, info = await client_page(context, None, page=page, transports=[transport])
    assert await page.evaluate("() => window.t.client.transport") == transport
    assert await page.evaluate("() => navigator.connection.effectiveType") == "3g"
    bob = await writer(new_context, login, info)

    started = time.monotonic()
    first = await settled(page, "() => window.t.create('over 3g')")
    round_trip = time.monotonic() - started
    assert first["status"] == "applied"
    assert round_trip >= LATENCY_MS / 1000, round_trip  # the link really is slow
    await page.evaluate(
        """async () => {
          const edits = [];
          for (let n = 0; n < 8; n++) edits.push(window.t.create('burst ' + n, {order: 'b' + n}));
          const target = window.t.find('over 3g');
          edits.push(window.t.update(target.pk, {completed: true}));
          // A big one: it takes a while at 750 kbit/s.
          edits.push(window.t.create('x'.repeat(400) + ' big'));
          window.t.burst = Promise.all(edits);
        }"""
    )
    for n in range(3):
        await settled(bob, "(n) => window.t.create('bob over fast ' + n)", n)
    results = await settled(page, "() => window.t.burst")
    assert [r["status"] for r in results] == ["applied"] * 10
    # Made in one tick on a 3G connection: one batch (the 50 ms window), not ten frames.
    batches = [len(f["mutations"]) for f in link.sent if f.get("type") == "mutate"] + posted
    assert 10 in batches, batches
    for n in range(3):
        await wait_title(page, f"bob over fast {n}", timeout=30_000)
    await wait_title(bob, "burst 7", timeout=30_000)
    await assert_converged(page, demo_server, info)
    await assert_converged(bob, demo_server, info)


async def test_offline_past_the_retention_gets_a_reset_and_loses_no_edit(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    context = await new_context()
    # Enough attempts to outlast a slow restart on a loaded machine.
    patient = {"baseMs": 200, "capMs": 1000, "maxAttempts": 100}
    page, info = await client_page(context, login, persist=True, backoff=patient)
    bob = await writer(new_context, login, info, backoff=patient)
    for title in ("shared", "toggle me", "bob deletes me"):
        assert (await settled(page, "(title) => window.t.create(title)", title))[
            "status"
        ] == "applied"
    await wait_title(bob, "bob deletes me")
    before = await page.evaluate("() => window.t.handle.position")

    await context.set_offline(True)
    await page.wait_for_function("() => window.t.client.state !== 'live'")
    # Four edits while offline, answered only when the network is back.
    await page.evaluate(
        """() => {
          const t = window.t;
          const shared = t.find('shared');
          t.offline = Promise.all([
            t.create('made offline'),
            t.update(t.find('toggle me').pk, {completed: true}),
            t.update(shared.pk, {title: "alice's title"}, shared.version),
            t.update(t.find('bob deletes me').pk, {completed: true}),
          ]);
        }"""
    )
    assert await page.evaluate("() => window.t.client.pendingCount") == 4
    pending = await page.evaluate(PENDING_IDS)
    assert len(pending) == 4  # in IndexedDB, should the page be closed now

    # Meanwhile bob edits the same title, deletes a todo alice edits, adds more...
    shared = await bob.evaluate("() => window.t.find('shared')")
    result = await settled(
        bob,
        '(s) => window.t.update(s.pk, {title: "bob\'s title"}, s.version)',
        shared,
    )
    assert result["status"] == "applied"
    doomed = await bob.evaluate("() => window.t.find('bob deletes me').pk")
    await settled(
        bob,
        """(pk) => window.t.mutate({stream: window.t.stream, model: 'todos.todo', pk,
                                    op: 'delete'})""",
        doomed,
    )
    for n in range(3):
        await settled(bob, "(n) => window.t.create('while alice was away ' + n)", n)
    # ... and the log is trimmed past alice's position.
    await asyncio.to_thread(
        demo_server.manage, "syncapp_trim", "--stream", info.stream, "--max-ops", "0"
    )
    oldest = server_head(demo_server, info.stream)[2]
    assert oldest > before["seq"] + 1, (before, oldest)
    # A server process keeps recent ops in memory and would still resume alice from
    # there; after a restart (likely enough while someone is away that long) only the
    # trimmed log is left.
    await asyncio.to_thread(demo_server.restart)

    await context.set_offline(False)
    results = await settled(page, "() => window.t.offline")
    assert [r["status"] for r in results] == ["applied", "applied", "conflict", "gone"]
    record = await assert_converged(page, demo_server, info)
    assert [r["reason"] for r in record["resets"]] == ["trimmed"]
    # The stale title edit was kept for a person to resolve (the title is `manual`).
    titles = {todo[1] for todo in (await page_todos(page)).values()}
    assert "bob's title" in titles
    assert "alice's title" not in titles
    conflict_rows = demo_server.sql(
        "select client_value from syncapp_conflict where mutation_id = ?",
        (uuid.UUID(results[2]["id"]).hex,),
    )
    assert conflict_rows == [('"alice\'s title"',)]
    assert {"made offline", "while alice was away 2"} <= titles
    assert await page.evaluate(PENDING_IDS) == []
    await assert_converged(bob, demo_server, info)


async def _pings(relay: Relay) -> int:
    return sum(1 for frame in relay.sent if frame.get("type") == "ping")


async def _clock_stamp(server: DemoServer, pk: str, field: str) -> int:
    ((clocks,),) = server.sql(
        "select sync_clocks from todos_todo where id = ?", (uuid.UUID(pk).hex,)
    )
    return int(json.loads(clocks)[field].split(":")[0])


async def _clocked_pages(
    new_context: NewContext, login: Login
) -> tuple[Page, ListInfo, Relay, Any, Page]:
    """Alice with a clock Playwright can set and 1 s heartbeats; bob with a true clock."""
    context = await new_context()
    await context.clock.install()
    relay = Relay()
    await context.route_web_socket("**/sync/ws/**", relay)
    page, info = await client_page(context, login, heartbeatMs=1000)
    bob = await writer(new_context, login, info)
    return page, info, relay, context.clock, bob


async def _still_live_and_pinging(page: Page, relay: Relay) -> None:
    """After the clock moved: the same connection stays live and keeps pinging."""
    connections, pings = len(relay.routes), await _pings(relay)
    statuses = len(await page.evaluate("() => window.t.statuses"))
    deadline = time.monotonic() + 15
    while await _pings(relay) < pings + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await _pings(relay) >= pings + 2, "the heartbeat stopped"
    assert len(relay.routes) == connections, "the connection was dropped"
    assert "reconnecting" not in (await page.evaluate("() => window.t.statuses"))[statuses:]


async def test_the_clock_moved_an_hour_forward_is_clamped_and_nothing_stalls(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    page, info, relay, clock, bob = await _clocked_pages(new_context, login)
    x = await settled(page, "() => window.t.create('x')")
    await wait_title(bob, "x")
    pk = x["object"]["pk"]

    await clock.set_system_time(time.time() + 3600)
    ahead = await page.evaluate("(now) => Date.now() - now", time.time() * 1000)
    assert ahead > 3_500_000, ahead
    await _still_live_and_pinging(page, relay)

    written_at = time.time()
    first = await settled(page, "(pk) => window.t.update(pk, {completed: true})", pk)
    assert first["status"] == "applied"
    # The server clamped alice's clock to its own time + MAX_CLOCK_SKEW (1 minute).
    stamp = await _clock_stamp(demo_server, pk, "completed")
    assert written_at * 1000 + 50_000 < stamp < time.time() * 1000 + 65_000, stamp
    # Within that minute a write stamped by a true clock loses, and is told so.
    await bob.wait_for_function("() => window.t.find('x').fields.completed === true")
    lost = await settled(bob, "(pk) => window.t.update(pk, {completed: false})", pk)
    assert lost["status"] == "conflict"
    # Alice's own later edits still order after her earlier ones.
    again = await settled(page, "(pk) => window.t.update(pk, {completed: false})", pk)
    assert again["status"] == "applied"
    await settled(page, "() => window.t.create('y')")
    await assert_converged(page, demo_server, info)
    await assert_converged(bob, demo_server, info)
    assert (await page.evaluate("() => window.t.find('x').fields.completed")) is False


async def test_the_clock_moved_an_hour_back_still_wins_after_what_it_saw(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    page, info, relay, clock, bob = await _clocked_pages(new_context, login)
    x = await settled(page, "() => window.t.create('x')")
    pk = x["object"]["pk"]
    await wait_title(bob, "x")

    await clock.set_system_time(time.time() - 3600)
    await _still_live_and_pinging(page, relay)

    # Bob (a true clock) checks it; alice sees that and unchecks it: hers is the later
    # edit, although her clock says an hour earlier.
    assert (await settled(bob, "(pk) => window.t.update(pk, {completed: true})", pk))[
        "status"
    ] == "applied"
    await page.wait_for_function("() => window.t.find('x').fields.completed === true")
    mine = await settled(page, "(pk) => window.t.update(pk, {completed: false})", pk)
    assert mine["status"] == "applied", mine
    await settled(page, "() => window.t.create('y')")
    await assert_converged(page, demo_server, info)
    await assert_converged(bob, demo_server, info)
    assert (await bob.evaluate("() => window.t.find('x').fields.completed")) is False


async def test_sleep_and_wake_resumes_without_a_gap(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    context = await new_context()
    relay = Relay()
    await context.route_web_socket("**/sync/ws/**", relay)
    page, info = await client_page(context, login, heartbeatMs=1000)
    bob = await writer(new_context, login, info)
    await settled(page, "() => window.t.create('made earlier')")
    await wait_title(bob, "made earlier")
    session = await context.new_cdp_session(page)
    await session.send("Debugger.enable")

    # An edit leaves as the page falls asleep; while it sleeps, its connection dies
    # without a word (no close frame, as when a laptop sleeps) and bob writes.
    await page.evaluate("() => { window.t.create('just before sleep'); }")
    await session.send("Debugger.pause")
    asleep = len(relay.routes) - 1
    relay.silenced.add(asleep)
    for n in range(3):
        await settled(bob, "(n) => window.t.create('while alice slept ' + n)", n)
    earlier = await bob.evaluate("() => window.t.find('made earlier').pk")
    await settled(bob, "(pk) => window.t.update(pk, {completed: true})", earlier)
    await asyncio.sleep(2.5)  # more than two heartbeats
    await session.send("Debugger.resume")

    # Awake: an edit at once, into the dead connection; the client notices it, connects
    # again, resumes from its position and sends what was not answered.
    await page.evaluate("() => { window.t.create('just after wake'); }")
    await relay.next_welcomed(after=asleep)
    record = await assert_converged(page, demo_server, info)
    titles = {todo[1] for todo in (await page_todos(page)).values()}
    assert {"just before sleep", "just after wake", "while alice slept 2"} <= titles
    assert "reconnecting" in await page.evaluate("() => window.t.statuses")
    seen = record["opsSeen"]
    assert seen == list(range(seen[0], seen[-1] + 1)), f"a gap or a repeat: {seen}"
    await assert_converged(bob, demo_server, info)


async def test_a_page_whose_clock_is_an_hour_behind_from_the_start_wins_after_what_it_loaded(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    """A page that has seen no op, only a snapshot, still stamps its writes after the
    server's time: the WebSocket's ``welcome`` carries it."""
    page, info, _relay, clock, bob = await _clocked_pages(new_context, login)
    x = await settled(bob, "() => window.t.create('x')")
    pk = x["object"]["pk"]
    assert (await settled(bob, "(pk) => window.t.update(pk, {completed: true})", pk))[
        "status"
    ] == "applied"

    # A fresh page on the same list, with a clock an hour behind: it loads x from a
    # snapshot (no op, so no op's time to learn from) and unchecks it.
    await clock.set_system_time(time.time() - 3600)
    page, _ = await client_page(
        page.context, None, list_id=info.list_id, page=page, heartbeatMs=1000
    )
    await page.wait_for_function("() => window.t.find('x')?.fields.completed === true")
    mine = await settled(page, "(pk) => window.t.update(pk, {completed: false})", pk)
    assert mine["status"] == "applied", mine
    await assert_converged(page, demo_server, info)
    await bob.wait_for_function("() => window.t.find('x').fields.completed === false")
