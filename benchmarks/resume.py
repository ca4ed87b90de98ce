"""Resume storm: N syncapp clients follow one stream; all disconnect; 100 ops are written;
all reconnect at once, each subscribing with ``after`` set to its last position. Measures
the time from the reconnection until every client has every op, and ops lost (missing or
out of order: must be 0).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import Any

from benchmarks import harness
from benchmarks.fanout import processes_for
from benchmarks.harness import DjangoServer

OPS = 100
SERVERS = ["daphne", "uvicorn"]


async def storm(server: DjangoServer, clients: int) -> dict[str, Any]:
    writer = harness.SyncWriter(server)
    await writer.open()
    url = f"ws://127.0.0.1:{server.port}/sync/ws/"
    group = harness.ClientGroup("syncapp", url, server.origin, clients, processes_for(clients))
    await group.start()
    try:
        await group.connect(parallel=50)
        await group.close()
        await asyncio.sleep(1.0)
        for i in range(OPS):
            await writer.write(i)
        await writer.wait_acks(OPS)
        await group.arm(0, OPS)
        t0 = time.time()
        connected = await group.connect()
        got = await group.collect(max(60.0, clients / 10))
        done = max(connected, got.last())
    finally:
        await group.stop()
        await writer.close()
    return {
        "setup": f"syncapp, {server.server}",
        "clients": clients,
        "ops": OPS,
        "all_subscribed_s": connected - t0,
        "all_resumed_s": done - t0 if not math.isnan(done) else math.nan,
        "lost": got.missing,
        "gaps": got.gaps,
        "problems": got.problems,
    }


def run(small: bool) -> dict[str, Any]:
    clients = 100 if small else 1000
    servers = SERVERS[:1] if small else SERVERS
    results = []
    with harness.workspace("resume") as (workdir, db):
        for name in servers:
            server = DjangoServer(f"resume-{name}", name, workdir, db.fresh(f"resume_{name}"))
            print(f"  resume, {name}: {clients} clients ...", file=sys.stderr, flush=True)
            with harness.running(server):
                results.append(asyncio.run(storm(server, clients)))
    columns = [
        "setup",
        "clients",
        "ops missed",
        "all subscribed s",
        "all resumed s",
        "lost",
        "gaps",
    ]
    rows = [
        [
            r["setup"],
            r["clients"],
            r["ops"],
            r["all_subscribed_s"],
            r["all_resumed_s"],
            r["lost"],
            r["gaps"],
        ]
        for r in results
    ]
    lost = sum(r["lost"] + r["gaps"] for r in results)
    out = {
        "name": "resume",
        "columns": columns,
        "rows": rows,
        "raw": results,
        "lost": lost,
        "notes": [
            "Times from the moment every client process is told to reconnect (all at "
            "once) to the last client's last op; goal: 1,000 clients within 3 s.",
            f"Clients in {processes_for(clients)} process(es); in-memory channel layer.",
        ],
    }
    print(harness.table(columns, rows))
    for note in out["notes"]:
        print(f"  {note}")
    print(f"resume: lost {lost}")
    return out
