"""The convergence checker with real browser tabs (issue 7's browser variant).

Four Chromium tabs (alice with two tabs in one context, so one leads the shared
connection and one follows over the BroadcastChannel; bob and demo with one each) make
seeded random mutations (create, toggle, rename, reorder, delete) on one shared todo
list while a seeded schedule cuts a context's WebSocket, takes a context offline for a
few seconds while its tabs keep mutating (the queue waits in IndexedDB), restarts the
demo server, and closes alice's leader tab (the other tab takes over the connection and
a new tab adopts the closed one's queue). Then everything heals, every queue drains,
every tab reaches the stream's head, and :func:`tests.chaos.checker.check` compares the
histories with the server's database: durable acks, no phantom, exactly once, per-tab
order, gap-free delivery, convergence. See ``tests/browser/chaos_tabs.py`` and
docs/reliability.md. A failure prints the seed; ``SYNCAPP_CHAOS_SEED`` replays one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path

from playwright.async_api import BrowserContext

from tests.browser.chaos_tabs import (
    FaultyLink,
    Tab,
    head_of,
    open_tab,
    pending_ids,
    read_server,
    schedule,
    wait_until,
)
from tests.browser.conditions import assert_converged, client_page, settled
from tests.browser.conftest import Login, NewContext
from tests.browser.servers import DemoServer
from tests.chaos.checker import check
from tests.chaos.history import summary
from tests.chaos.schedule import Fault

SEED = int(os.environ.get("SYNCAPP_CHAOS_SEED") or 7)
DURATION = 24.0
RATE = 1.2
"""Mutations per second per tab (on average)."""
USERS = {"alice": 2, "bob": 1, "demo": 1}
TWO_TABS = "alice"
DRAIN_TIMEOUT = 120.0
"""Seconds for every mutation to be answered (an idempotency lease left by the restart
can hold one back for 30 s), and again for every tab to reach the head."""


class Run:
    def __init__(self, demo_server: DemoServer, seed: int, workdir: Path) -> None:
        self.server = demo_server
        self.seed = seed
        self.workdir = workdir
        self.contexts: dict[str, BrowserContext] = {}
        self.links: dict[str, FaultyLink] = {}
        self.tabs: list[Tab] = []
        self.list_id: str | None = None
        self.until = 0.0
        self.log: list[str] = []
        self.queued_offline: list[int] = []
        self.errors: list[str] = []
        self.t0 = time.monotonic()

    def note(self, line: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:6.1f}s {line}")

    async def add_tab(self, user: str, login: Login | None = None) -> Tab:
        context = self.contexts[user]
        page = await context.new_page()
        if login is not None:
            await login(page, user)
        name = f"{user}-{sum(1 for tab in self.tabs if tab.user == user) + 1}"
        page.on("pageerror", lambda error: self.errors.append(f"{name}: {error}"))
        tab, self.list_id = await open_tab(
            name,
            user,
            context,
            self.links[user],
            self.list_id,
            self.seed * 100 + len(self.tabs),
            page=page,
        )
        self.tabs.append(tab)
        if self.until:
            tab.task = asyncio.create_task(self.drive(tab))
        self.note(f"{name} opened")
        return tab

    async def drive(self, tab: Tab) -> None:
        while not tab.closed:
            await asyncio.sleep(tab.rng.expovariate(RATE))
            if tab.closed or time.monotonic() >= self.until:
                return
            await tab.step()

    def alive(self) -> list[Tab]:
        return [tab for tab in self.tabs if not tab.closed]

    async def apply(self, fault: Fault) -> None:
        self.note(str(fault))
        target = fault.target
        if fault.kind == "disconnect":
            await self.links[target].cut_all()
        elif fault.kind == "offline":
            link, context = self.links[target], self.contexts[target]
            link.blocked = True
            await context.set_offline(True)
            await link.cut_all()
            # At least one mutation made offline (the tabs' own pace may make none).
            tab = next(tab for tab in self.alive() if tab.user == target)
            await tab.step()
            await asyncio.sleep(fault.duration)
            self.queued_offline.append(len(await pending_ids(tab.page)))
            await context.set_offline(False)
            link.blocked = False
        elif fault.kind == "restart_server":
            await asyncio.to_thread(self.server.stop)
            await asyncio.sleep(fault.duration)
            await asyncio.to_thread(self.server.start)
        elif fault.kind == "close_leader":
            await self.close_leader(target)

    async def close_leader(self, user: str) -> None:
        mine = [tab for tab in self.alive() if tab.user == user]
        leaders = [t for t in mine if await t.page.evaluate("() => window.h.client.isLeader")]
        leader = leaders[0] if leaders else mine[0]
        leader.closed = True
        if leader.task is not None:
            leader.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leader.task
        leader.records = [*await leader.take_records(leave=True), {"type": "closed"}]
        queued = len(await pending_ids(leader.page))
        await leader.page.close()
        self.note(f"{leader.name} closed (leader: {bool(leaders)}, {queued} queued)")
        others = [tab for tab in mine if tab is not leader]
        for other in others:
            await other.page.wait_for_function(
                "() => window.h.client.isLeader", timeout=30_000, polling=100
            )
        # A new tab of the same user adopts whatever the closed one left queued.
        await self.add_tab(user)

    async def faults(self, faults: list[Fault]) -> None:
        start = time.monotonic()
        for fault in faults:
            await asyncio.sleep(max(0.0, start + fault.at - time.monotonic()))
            await self.apply(fault)

    async def heal_and_drain(self) -> tuple[str, int]:
        for user, context in self.contexts.items():
            await context.set_offline(False)
            self.links[user].blocked = False
        if not self.server.running:
            await asyncio.to_thread(self.server.start)
        self.note("healed; draining")

        async def drained() -> bool:
            for tab in self.alive():
                if not await tab.page.evaluate("() => window.h.drained()"):
                    return False
            return True

        await wait_until("every mutation answered", drained, DRAIN_TIMEOUT)
        for user in self.contexts:
            page = next(tab.page for tab in self.alive() if tab.user == user)
            assert await pending_ids(page) == [], f"{user}: mutations left in IndexedDB"
        assert self.list_id is not None
        stream = f"todos.list:{self.list_id}"
        epoch, head = head_of(self.server, stream)
        self.note(f"drained; head {head}")

        async def at_head() -> bool:
            for tab in self.alive():
                position = await tab.page.evaluate("() => window.h.handle.position")
                if position != {"epoch": epoch, "seq": head}:
                    return False
            return True

        await wait_until(f"every tab at the head {head}", at_head, DRAIN_TIMEOUT)
        assert head_of(self.server, stream) == (epoch, head), "the stream moved meanwhile"
        for tab in self.alive():
            final = await tab.page.evaluate("() => window.h.final()")
            tab.records = [*await tab.take_records(), final]
        return epoch, head


async def test_browser_tabs_converge_under_a_seeded_fault_schedule(
    new_context: NewContext, login: Login, demo_server: DemoServer, tmp_path: Path
) -> None:
    run = Run(demo_server, SEED, tmp_path)
    faults = schedule(SEED, DURATION, list(USERS), TWO_TABS)
    print(f"chaos tabs seed={SEED} (replay: SYNCAPP_CHAOS_SEED={SEED})")
    for user, count in USERS.items():
        run.contexts[user] = await new_context()
        run.links[user] = FaultyLink()
        await run.contexts[user].route_web_socket("**/sync/ws/**", run.links[user])
        for index in range(count):
            await run.add_tab(user, login if index == 0 else None)
    leaders = [await t.page.evaluate("() => window.h.client.isLeader") for t in run.tabs]
    assert leaders.count(True) == len(USERS), "one leader per context"

    run.until = time.monotonic() + DURATION
    for tab in run.tabs:
        tab.task = asyncio.create_task(run.drive(tab))
    try:
        await run.faults(faults)
        await asyncio.sleep(max(0.0, run.until - time.monotonic()))
        for tab in run.alive():
            if tab.task is not None:
                await tab.task
        await run.heal_and_drain()
    finally:
        for tab in run.tabs:
            if tab.task is not None and not tab.task.done():
                tab.task.cancel()
    assert run.list_id is not None
    server = await asyncio.to_thread(
        read_server, demo_server, f"todos.list:{run.list_id}", tmp_path
    )
    histories = [tab.history() for tab in run.tabs]
    for history in histories:
        with (tmp_path / f"{history.client}.jsonl").open("w") as out:
            out.writelines(json.dumps(record) + "\n" for record in history.records)
    violations = check(histories, server)

    counts = {h.client: summary(h) for h in histories}
    report = "\n".join(
        [
            f"chaos tabs seed={SEED}: {len(violations)} violations; replay with "
            f"SYNCAPP_CHAOS_SEED={SEED}; histories in {tmp_path}",
            f"log: {len(server.ops)} ops, head {server.head}, {len(server.objects)} todos, "
            f"{len(server.conflicts)} conflict rows; queued while offline: "
            f"{run.queued_offline}",
            *(f"  {fault}" for fault in faults),
            *run.log,
            *(
                f"  {name}: {' '.join(f'{k}={v}' for k, v in sorted(c.items()))}"
                for name, c in counts.items()
            ),
            *(f"  {violation}" for violation in violations[:50]),
        ]
    )
    print(report)
    assert violations == [], report
    assert run.errors == [], run.errors
    # The run did what it says: every tab wrote, the log took it, a closed tab's
    # history ended early, and some mutations really waited in IndexedDB offline.
    invoked = sum(c.get("invoke", 0) for c in counts.values())
    assert invoked >= 30, report
    assert len(server.ops) >= 20, report
    assert all(c.get("invoke", 0) > 0 for c in counts.values()), report
    assert sum(1 for h in histories if h.records[-1]["type"] == "closed") == 1, report
    assert all(run.queued_offline), report  # each offline period left a queue in IndexedDB
    # No mutation's fate stays unknown: the closed tab's queue was sent and answered by
    # the tab that took over (or adopted it), except at most the one it was still
    # saving to IndexedDB as it closed (never sent, so not in the log either).
    answered = {r["id"] for h in histories for r in h.records if r["type"] == "ack"}
    unknown = [
        (h.client, r["id"])
        for h in histories
        for r in h.records
        if r["type"] == "invoke" and r["id"] not in answered
    ]
    assert len(unknown) <= 1, unknown
    closed = {h.client for h in histories if h.records[-1]["type"] == "closed"}
    assert {client for client, _ in unknown} <= closed, unknown
    logged = {op.mutation for op in server.ops}
    assert not logged & {mutation for _, mutation in unknown}, unknown


async def test_an_edit_that_waits_for_an_earlier_one_is_not_overtaken(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    """Found by the chaos run (per-tab ``order``): a version-checked rename waits for the
    result of an earlier edit of its todo (to be rebased on it); a later create must
    wait behind it, not reach the server first."""
    page, info = await client_page(await new_context(), login)
    first = await settled(page, "() => window.t.create('x')")
    assert first["status"] == "applied"
    results = await settled(
        page,
        """async () => {
          const t = window.t;
          const x = t.find('x');
          return Promise.all([
            t.update(x.pk, {completed: true}),
            t.update(x.pk, {title: 'x renamed'}, x.version),
            t.create('y'),
          ]);
        }""",
    )
    assert [r["status"] for r in results] == ["applied"] * 3, results
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs), f"applied out of the order they were made: {seqs}"
    await assert_converged(page, demo_server, info)
