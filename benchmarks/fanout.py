"""Fan-out: one stream, N subscribers in other processes, one writer.

For each peer (the ``websockets`` floor, plain Channels ``group_send``, syncapp; on
daphne and uvicorn, in-memory layer), on one server process started for the peer:

1. connect N subscribers (RSS before and after: KB per idle connection);
2. burst: write M ops back to back; deliveries/s = M x N / (time from the first write to
   the last client's receipt of the last op); server CPU seconds over that window / M x N;
3. paced: ops at 1,000 deliveries/s (1000 / N ops per second); latency from the moment
   the writer sent the op's mutation to each client's receipt, p50 and p99.

The writes are the same for every Django peer: ``mutate`` frames on a syncapp
connection (one card per frame; frames that arrive while a batch is applied are applied
together). Plain Channels is fed as hand-written code feeds it (``plainsave``): a
``post_save`` receiver ``group_send``s each card once committed, and the consumer
``send_json``s each event. A second plain peer (``plain``) joins the group of syncapp's
own after-commit ``group_send`` instead, one message per transaction; syncapp's hub joins
it once per process. The floor's writer sends the same frames (an ops frame with one op
of the same shape) straight to the server, which ``broadcast()``s them.

Every client checks that it got every op (``lost``; ``late`` for the baselines, whose
phases are cut off after MAX_WAIT) and that seqs are contiguous (``gaps``).
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks import gcsettle, harness
from benchmarks.harness import DjangoServer, FloorServer, Usage

DELIVERY_RATE = 1000.0  # deliveries per second in the paced phase
# The peers syncapp is compared with: what they deliver after MAX_WAIT is counted as
# late (their figure), not as lost (which fails the run).
BASELINES = ("plainsave", "plain", "dcrf")
MAX_WAIT = 60.0


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # floor, plainsave, plain, bare, dcrf, syncapp
    server: str  # floor, daphne, uvicorn


PEERS = [
    Peer("websockets broadcast (floor)", "floor", "floor"),
    Peer("plain Channels, daphne", "plainsave", "daphne"),
    Peer("plain Channels on syncapp's broadcast, daphne", "plain", "daphne"),
    Peer("syncapp, daphne", "syncapp", "daphne"),
    Peer("plain Channels, uvicorn", "plainsave", "uvicorn"),
    Peer("plain Channels on syncapp's broadcast, uvicorn", "plain", "uvicorn"),
    Peer("syncapp, uvicorn", "syncapp", "uvicorn"),
    Peer("djangochannelsrestframework observer, daphne", "dcrf", "daphne"),
    Peer("djangochannelsrestframework observer, uvicorn", "dcrf", "uvicorn"),
]


def plan(small: bool) -> list[tuple[int, int, int]]:
    """(subscribers, burst ops, paced ops) per step; ``BENCH_FANOUT_N=1000`` keeps the
    steps of those subscriber counts."""
    steps = (
        [(50, 20, 10), (200, 20, 5)] if small else [(100, 100, 30), (1000, 50, 8), (5000, 10, 2)]
    )
    wanted = os.environ.get("BENCH_FANOUT_N")
    if wanted:
        steps = [step for step in steps if str(step[0]) in wanted.split(",")]
    return steps


def processes_for(subscribers: int) -> int:
    return max(1, min(4, math.ceil(subscribers / 250)))


def url_for(kind: str, port: int) -> str:
    if kind == "syncapp":
        return f"ws://127.0.0.1:{port}/sync/ws/"
    if kind in ("plainsave", "plain", "bare", "dcrf"):
        return f"ws://127.0.0.1:{port}/{kind}/ws/?stream={harness.STREAM}"
    return f"ws://127.0.0.1:{port}/"


class Groups:
    """Client groups spread evenly over several server processes, asked as one."""

    def __init__(self, kind: str, servers: list[Any], subscribers: int) -> None:
        shares = [
            subscribers // len(servers) + (1 if i < subscribers % len(servers) else 0)
            for i in range(len(servers))
        ]
        self.groups = [
            harness.ClientGroup(
                kind, url_for(kind, server.port), server.origin, share, processes_for(share)
            )
            for server, share in zip(servers, shares, strict=True)
            if share
        ]

    async def start(self) -> None:
        for group in self.groups:
            await group.start()

    async def connect(self, parallel: int) -> None:
        await asyncio.gather(*(g.connect(parallel=parallel) for g in self.groups))

    async def arm(self, first: int, count: int) -> None:
        await asyncio.gather(*(g.arm(first, count) for g in self.groups))

    async def collect(self, timeout: float) -> harness.Received:
        received = harness.Received()
        for got in await asyncio.gather(*(g.collect(timeout) for g in self.groups)):
            for index, times in got.times.items():
                received.times.setdefault(index, []).extend(times)
            received.missing += got.missing
            received.gaps += got.gaps
            received.problems.extend(got.problems)
        return received

    async def stop(self) -> None:
        for group in self.groups:
            await group.stop()


class Usages:
    """CPU and RSS summed over several server processes."""

    def __init__(self, servers: list[Any]) -> None:
        self.pids = [server.proc.pid for server in servers]
        self.each = [Usage(pid) for pid in self.pids]

    def cpu(self) -> float:
        return sum(u.cpu() for u in self.each)

    def rss(self) -> int:
        return sum(u.rss() for u in self.each)


async def measure(
    peer: Peer,
    servers: Any,
    subscribers: int,
    burst: int,
    paced: int,
    first: int,
    max_wait: float | None = None,
) -> dict[str, Any]:
    """Subscribers spread over ``servers`` (one server or several sharing a Redis layer);
    the writer writes through the first. ``max_wait`` caps each phase's wait for the
    deliveries (what has not arrived by then counts as missing)."""
    if not isinstance(servers, list):
        servers = [servers]
    server = servers[0]
    usage = Usages(servers)
    writer = harness.FloorWriter(server) if peer.kind == "floor" else harness.SyncWriter(server)
    await writer.open()
    group = Groups(peer.kind, servers, subscribers)
    await group.start()
    try:
        await asyncio.sleep(0.5)
        rss_before = usage.rss()
        await group.connect(parallel=50)
        gcsettle.settle(usage.pids)
        await asyncio.sleep(1.0)
        rss_after = usage.rss()

        # burst
        await group.arm(first, burst)
        cpu0 = usage.cpu()
        t0 = time.time()
        for i in range(first, first + burst):
            await writer.write(i)
        timeout = max(30.0, burst * subscribers / 300)
        if max_wait is not None:
            timeout = min(timeout, max_wait)
        got = await group.collect(timeout)
        cpu = usage.cpu() - cpu0
        elapsed = got.last() - t0
        await writer.wait_acks(burst)
        writes_per_s = burst / (writer.last_ack_at - t0)
        deliveries = burst * subscribers
        received = deliveries - got.missing
        lost, gaps = got.missing, got.gaps

        # paced
        start = first + burst
        await group.arm(start, paced)
        gcsettle.settle(usage.pids)
        await asyncio.sleep(0.5)
        sent: dict[int, float] = {}
        interval = subscribers / DELIVERY_RATE
        t = time.monotonic()
        for i in range(start, start + paced):
            sent[i] = time.time()
            await writer.write(i)
            t += interval
            await asyncio.sleep(max(0.0, t - time.monotonic()))
        timeout = max(30.0, paced * subscribers / 300)
        got = await group.collect(timeout if max_wait is None else min(timeout, max_wait))
        latencies = got.latencies(sent)
        lost += got.missing
        gaps += got.gaps
        await writer.wait_acks(burst + paced)
        acks = getattr(writer, "ack_times", [])  # the floor's writer gets none
        per_op = got.per_op(sent, {i: acks[i - first] for i in sent if i - first < len(acks)})
        problems = got.problems
    finally:
        await group.stop()
        await writer.close()
    return {
        "setup": peer.name,
        "kind": peer.kind,
        "server": peer.server,
        "subscribers": subscribers,
        "burst_ops": burst,
        "deliveries_per_s": received / elapsed if elapsed > 0 else math.nan,
        "writes_per_s": writes_per_s,
        "cpu_us_per_delivery": cpu / deliveries * 1e6,
        "p50_ms": harness.percentile(latencies, 50) * 1000,
        "p99_ms": harness.percentile(latencies, 99) * 1000,
        "paced_ops": paced,
        "paced_per_op_ms": per_op,
        "kb_per_connection": (rss_after - rss_before) / subscribers / 1024,
        "lost": lost,
        "gaps": gaps,
        "problems": problems,
    }


async def run_peer(
    peer: Peer, steps: list[tuple[int, int, int]], workdir: Any, db: Any
) -> list[dict[str, Any]]:
    name = f"{peer.kind}-{peer.server}"
    server: Any
    if peer.kind == "floor":
        server = FloorServer(name, workdir)
    else:
        env = db.fresh(name)
        if peer.kind == "dcrf":
            env["BENCH_DCRF"] = "1"
        if peer.kind == "plainsave":
            env["BENCH_PLAIN_SAVE"] = "1"
        server = DjangoServer(name, peer.server, workdir, env)
    rows = []
    max_wait = MAX_WAIT if peer.kind in BASELINES else None
    with harness.running(server):
        first = 0
        for subscribers, burst, paced in steps:
            print(f"  {peer.name}: {subscribers} subscribers ...", file=sys.stderr, flush=True)
            rows.append(await measure(peer, server, subscribers, burst, paced, first, max_wait))
            first += burst + paced
    return rows


def ratio(value: float, base: float | None) -> float:
    if base is None or not base or math.isnan(base) or math.isnan(value):
        return math.nan
    return value / base


def run(small: bool, peers: list[Peer] | None = None) -> dict[str, Any]:
    steps = plan(small)
    wanted = os.environ.get("BENCH_FANOUT_PEERS")
    peers = peers or [
        p for p in PEERS if not wanted or p.kind + "-" + p.server in wanted.split(",")
    ]
    results: list[dict[str, Any]] = []
    with harness.workspace("fanout") as (workdir, db):
        for peer in peers:
            results.extend(asyncio.run(run_peer(peer, steps, workdir, db)))

    columns = [
        "setup", "N", "deliveries/s (burst)", "x floor", "x plain", "CPU µs/delivery",
        "p50 ms", "p99 ms", "p99 x floor", "KB/conn", "writes/s", "late", "lost", "gaps",
    ]  # fmt: skip
    rows = []
    for r in results:
        same_n = [x for x in results if x["subscribers"] == r["subscribers"]]
        floor = next((x for x in same_n if x["kind"] == "floor"), None)
        # "x plain": against plain Channels fed per save, as hand-written code feeds it
        # (against the one on syncapp's broadcast when only that one ran).
        plain = next(
            (
                x
                for kind in ("plainsave", "plain")
                for x in same_n
                if x["kind"] == kind and x["server"] == r["server"]
            ),
            None,
        )
        rows.append([
            r["setup"], r["subscribers"], r["deliveries_per_s"],
            ratio(r["deliveries_per_s"], floor["deliveries_per_s"] if floor else None),
            ratio(r["deliveries_per_s"], plain["deliveries_per_s"] if plain else None),
            r["cpu_us_per_delivery"], r["p50_ms"], r["p99_ms"],
            ratio(r["p99_ms"], floor["p99_ms"] if floor else None),
            r["kb_per_connection"], r["writes_per_s"],
            r["lost"] if r["kind"] in BASELINES else "",
            r["lost"] if r["kind"] not in BASELINES else "", r["gaps"],
        ])  # fmt: skip
    plots = [
        harness.plot(
            "fanout-throughput", "Fan-out, burst: deliveries per second", "subscribers",
            "deliveries/s",
            {s: [(r["subscribers"], r["deliveries_per_s"]) for r in results if r["setup"] == s]
             for s in dict.fromkeys(r["setup"] for r in results)},
            logy=True,
        ),
        harness.plot(
            "fanout-latency", f"Fan-out, p99 latency at {DELIVERY_RATE:,.0f} deliveries/s",
            "subscribers", "p99 ms",
            {s: [(r["subscribers"], r["p99_ms"]) for r in results if r["setup"] == s]
             for s in dict.fromkeys(r["setup"] for r in results)},
            logy=True,
        ),
    ]  # fmt: skip
    lost = sum(r["lost"] + r["gaps"] for r in results if r["kind"] not in BASELINES)
    out = {
        "name": "fanout",
        "columns": columns,
        "rows": rows,
        "raw": results,
        "lost": lost,
        "plots": [str(p) for p in plots],
        "notes": [
            "One server process per setup; clients in "
            + ", ".join(f"{processes_for(n)} process(es) for N={n}" for n, _, _ in steps)
            + "; in-memory channel layer; "
            + f"{os.environ.get('BENCH_DB', 'sqlite')} database.",
            "Burst: M ops written back to back, one per mutate frame; "
            + ", ".join(f"M={m} at N={n}" for n, m, _ in steps)
            + ".",
            f"Latency: ops paced at {DELIVERY_RATE:,.0f} deliveries/s, from the writer's "
            "send to each client's receipt.",
            f"Each phase waits at most {MAX_WAIT:g} s for the plain Channels and "
            "djangochannelsrestframework peers; what they deliver later counts as late "
            "(what syncapp or the floor does not deliver counts as lost and fails the run).",
            "CPU µs/delivery is the server's CPU over the burst, writes included (the floor "
            "applies no mutation).",
            "writes/s: the burst's mutations over the time until the last was acknowledged; "
            "when deliveries/s is close to writes/s x N, the burst measured the writes, not "
            "the fan-out.",
        ],
    }
    print(harness.table(columns, rows))
    for note in out["notes"]:
        print(f"  {note}")
    print(f"fanout: lost {lost}")
    return out
