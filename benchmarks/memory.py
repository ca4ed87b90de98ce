"""Memory: server RSS per idle subscribed connection.

For each setup (a bare Channels consumer that only accepts, the plain Channels
``group_send`` consumer, syncapp subscribed to one stream; on daphne and on uvicorn), a
fresh server process is started, warmed with a few connections, then N connections are
opened from client processes and left idle. KB per connection = (RSS after, settled -
RSS before) / N. The ratio is against the bare consumer on the same server and N.

RSS moves in allocator-sized steps, so the figure is only meaningful for large N; it
includes what the server allocates per connection at every layer (the server's
transport and protocol objects, the ASGI scope, the consumer, its queue and, for
syncapp, the subscription).
"""

from __future__ import annotations

import asyncio
import math
import sys
from typing import Any

from benchmarks import harness
from benchmarks.fanout import Peer, processes_for, ratio, url_for
from benchmarks.harness import DjangoServer, Usage

WARM = 20
SETTLE_S = 2.0


SETUPS = [
    Peer("bare Channels consumer, daphne", "bare", "daphne"),
    Peer("plain Channels, daphne", "plain", "daphne"),
    Peer("syncapp, daphne", "syncapp", "daphne"),
    Peer("bare Channels consumer, uvicorn", "bare", "uvicorn"),
    Peer("plain Channels, uvicorn", "plain", "uvicorn"),
    Peer("syncapp, uvicorn", "syncapp", "uvicorn"),
]


def sizes(small: bool) -> list[int]:
    return [200] if small else [1000, 5000]


async def measure(setup: Peer, server: DjangoServer, connections: int) -> dict[str, Any]:
    assert server.proc is not None
    usage = Usage(server.proc.pid)
    url = url_for(setup.kind, server.port)
    warm = harness.ClientGroup(setup.kind, url, server.origin, WARM, 1)
    group = harness.ClientGroup(
        setup.kind, url, server.origin, connections, processes_for(connections)
    )
    await warm.start()
    await group.start()
    try:
        # The first connections load code and fill caches; they are not per-connection.
        await warm.connect()
        await asyncio.sleep(SETTLE_S)
        before = usage.rss()
        await group.connect(parallel=50)
        await asyncio.sleep(SETTLE_S)
        after = usage.rss()
    finally:
        await group.stop()
        await warm.stop()
    return {
        "setup": setup.name,
        "kind": setup.kind,
        "server": setup.server,
        "connections": connections,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "kb_per_connection": (after - before) / connections / 1024,
    }


async def run_setup(setup: Peer, connections: int, workdir: Any, db: Any) -> dict[str, Any]:
    name = f"{setup.kind}-{setup.server}-{connections}"
    server = DjangoServer(name, setup.server, workdir, db.fresh(name))
    with harness.running(server):
        print(f"  {setup.name}: {connections} connections ...", file=sys.stderr, flush=True)
        return await measure(setup, server, connections)


def run(small: bool) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with harness.workspace("memory") as (workdir, db):
        for connections in sizes(small):
            for setup in SETUPS:
                results.append(asyncio.run(run_setup(setup, connections, workdir, db)))

    columns = ["setup", "N", "RSS before MB", "RSS after MB", "KB/conn", "x bare"]
    rows = []
    for r in results:
        bare = next(
            (
                x
                for x in results
                if x["kind"] == "bare"
                and x["server"] == r["server"]
                and x["connections"] == r["connections"]
            ),
            None,
        )
        rows.append([
            r["setup"], r["connections"], r["rss_before_mb"], r["rss_after_mb"],
            r["kb_per_connection"],
            ratio(r["kb_per_connection"], bare["kb_per_connection"] if bare else None),
        ])  # fmt: skip
    plots = [
        harness.plot(
            "memory", "Server memory per idle connection", "connections", "KB/connection",
            {s: [(r["connections"], r["kb_per_connection"]) for r in results if r["setup"] == s]
             for s in dict.fromkeys(r["setup"] for r in results)},
            logy=False,
        ),
    ]  # fmt: skip
    out = {
        "name": "memory",
        "columns": columns,
        "rows": rows,
        "raw": results,
        "plots": [str(p) for p in plots],
        "notes": [
            "One fresh server process per setup and N; in-memory channel layer; "
            f"{WARM} warm-up connections before the 'before' reading; readings "
            f"{SETTLE_S:g} s after the last connection subscribed.",
            "bare: accepts and sends one frame; plain: joins the stream's group; "
            "syncapp: hello + subscribe to one stream.",
        ],
    }
    print(harness.table(columns, rows))
    for note in out["notes"]:
        print(f"  {note}")
    if any(math.isnan(r[4]) for r in rows):
        print("memory: some readings are missing")
    return out
