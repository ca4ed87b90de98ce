"""Fan-out across two server processes on Redis.

Two daphne processes share one database and one channel layer on a private
redis-server; the subscribers are split evenly between them and the writer writes
through the first, so every op crosses Redis to reach half of them. Peers: plain
Channels fed per save (``plainsave``), plain Channels on syncapp's broadcast (``plain``)
and syncapp (see ``fanout``), each on ``RedisChannelLayer`` and on
``RedisPubSubChannelLayer``. Phases and columns as in ``fanout`` (burst deliveries/s,
paced p50/p99, CPU of both servers per delivery).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from typing import Any

from benchmarks import harness
from benchmarks.fanout import Peer, measure, ratio
from benchmarks.harness import DjangoServer
from tests.live.servers import Redis, free_port

LAYERS = {"redis": "RedisChannelLayer", "redis-pubsub": "RedisPubSubChannelLayer"}
KINDS = ["plainsave", "plain", "syncapp"]
PLAIN = ("plainsave", "plain")
NAMES = {
    "plainsave": "plain Channels",
    "plain": "plain Channels on syncapp's broadcast",
    "syncapp": "syncapp",
}
# Plain consumers on RedisChannelLayer in the writer's process deliver slowly (see the
# notes); their phases are cut off here and what is late counts as "late", not lost.
MAX_WAIT = 60.0


def plan(small: bool) -> list[tuple[int, int, int]]:
    """(subscribers, burst ops, paced ops) per step."""
    if small:
        return [(100, 20, 5)]
    return [(1000, 50, 8)]


async def run_pair(
    kind: str, layer: str, steps: list[tuple[int, int, int]], workdir: Any, db: Any
) -> list[dict[str, Any]]:
    name = f"{kind}-{layer}"
    redis = Redis(f"redis-{name}", free_port(), workdir / f"redis-{name}.log")
    env = {**db.fresh(name), "BENCH_LAYER": layer, "BENCH_REDIS_URL": ""}
    if kind == "plainsave":
        env["BENCH_PLAIN_SAVE"] = "1"
    rows = []
    with harness.running(redis):
        env["BENCH_REDIS_URL"] = redis.url
        servers = [DjangoServer(f"{name}-{i}", "daphne", workdir, env) for i in (1, 2)]
        with harness.running(servers[0]), harness.running(servers[1]):
            first = 0
            peer = Peer(f"{NAMES[kind]}, 2 x daphne, {LAYERS[layer]}", kind, "daphne")
            for subscribers, burst, paced in steps:
                print(f"  {peer.name}: {subscribers} subscribers ...", file=sys.stderr, flush=True)
                row = await measure(
                    peer, servers, subscribers, burst, paced, first, max_wait=MAX_WAIT
                )
                rows.append({**row, "layer": layer})
                first += burst + paced
    return rows


def run(small: bool) -> dict[str, Any]:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed; this workload starts its own")
    steps = plan(small)
    layers = os.environ.get("BENCH_REDIS_LAYERS", ",".join(LAYERS)).split(",")
    kinds = os.environ.get("BENCH_REDIS_KINDS", ",".join(KINDS)).split(",")
    results: list[dict[str, Any]] = []
    with harness.workspace("fanout_redis") as (workdir, db):
        for layer in layers:
            for kind in kinds:
                results.extend(asyncio.run(run_pair(kind, layer, steps, workdir, db)))

    columns = [
        "setup", "N", "deliveries/s (burst)", "x plain RedisChannelLayer", "x plain same layer",
        "CPU µs/delivery", "p50 ms", "p99 ms", "writes/s", "late (plain)", "lost", "gaps",
    ]  # fmt: skip
    rows = []
    for r in results:
        same_n = [x for x in results if x["subscribers"] == r["subscribers"]]
        # "x plain": against plain Channels fed per save (on syncapp's broadcast when
        # only that one ran).
        plain: dict[str, dict[str, Any]] = {}
        for kind in reversed(PLAIN):
            plain.update({x["layer"]: x for x in same_n if x["kind"] == kind})
        base = plain.get("redis")
        same = plain.get(r["layer"])
        rows.append([
            r["setup"], r["subscribers"], r["deliveries_per_s"],
            ratio(r["deliveries_per_s"], base["deliveries_per_s"] if base else None),
            ratio(r["deliveries_per_s"], same["deliveries_per_s"] if same else None),
            r["cpu_us_per_delivery"], r["p50_ms"], r["p99_ms"], r["writes_per_s"],
            r["lost"] if r["kind"] in PLAIN else "",
            r["lost"] if r["kind"] not in PLAIN else "", r["gaps"],
        ])  # fmt: skip
    # What syncapp loses fails the run; the plain peer's late deliveries are its figure.
    lost = sum(r["lost"] + r["gaps"] for r in results if r["kind"] not in PLAIN)
    out = {
        "name": "fanout_redis",
        "columns": columns,
        "rows": rows,
        "raw": results,
        "lost": lost,
        "notes": [
            "Two daphne processes, one private redis-server, subscribers split evenly; the "
            "writer writes through the first process; "
            f"{os.environ.get('BENCH_DB', 'sqlite')} database shared by both.",
            "CPU µs/delivery: both server processes' CPU over the burst.",
            f"Each phase waits at most {MAX_WAIT:g} s; plain consumers on RedisChannelLayer "
            "in the writer's process deliver at tens per second here (those in the other "
            "process keep up; cause not found), so their late deliveries are counted, "
            "not waited for. Redis hosts get socket_timeout=10 and max_connections=2000 "
            "(redis-py 8's defaults crash plain consumers: see docs/deployment.md).",
        ],
    }
    print(harness.table(columns, rows))
    for note in out["notes"]:
        print(f"  {note}")
    print(f"fanout_redis: lost {lost}")
    return out
