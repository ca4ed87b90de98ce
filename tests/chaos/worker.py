"""One chaos client in its own OS process: ``python -m tests.chaos.worker PLAN.json``.

It runs one :class:`syncapp.client.SyncClient` against the daphne processes, through a
TCP proxy of its own (one listening port per server) so that the plan can cut its
connections (``disconnect``) or take it offline for a while (``offline``: every
connection is cut and new ones are closed at once). It subscribes to the plan's
stream and, from the harness's go signal until ``stop``, makes random mutations on the
stream's cards, one after the other in invocation order; what it cannot send yet (it
is offline, the server is gone) waits in its queue and goes out under the same id when
it is back. A result that says ``retry`` (``in_progress`` while a killed process's
lease runs out) is sent again, with the same id, before anything invoked after it.

Everything it does and sees goes into its history (:mod:`tests.chaos.history`); the
files it shares with the harness, all in the plan's ``workdir``:

- ``<client>.jsonl``: the history; its ``ready`` record says the snapshot is loaded;
- ``go.json`` (from the harness): ``{"t0"}``, the wall time the plan's offsets count from;
- ``<client>.quiesced`` (from the worker): every mutation has its answer, or the drain
  deadline passed;
- ``head.json`` (from the harness): ``{"epoch", "head"}`` once every client quiesced;
  the worker follows the stream up to it, records its ``final`` view and exits (0 when
  it reached the head, 3 when it did not).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from syncapp.client import (
    Backoff,
    ClientError,
    GapDetected,
    OpApplied,
    SnapshotLoaded,
    StreamEvent,
    StreamHandle,
    StreamReset,
    SyncClient,
)
from syncapp.client.frames import WelcomeFrame
from tests.chaos.history import Recorder

CARD = "testapp.card"


class Proxy:
    """Forwards TCP connections from a local port to one server's; can cut them all and
    refuse new ones (the client is offline)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.offline = False
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.offline:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (OSError, ConnectionError):
        sink.transport.abort()
    finally:
        sink.close()


async def fetch_token(port: int, auth: tuple[str, str]) -> str:
    """``POST /sync/api/ws-token/`` with basic auth, through a proxy port."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        writer.write(
            (
                "POST /sync/api/ws-token/ HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n"
                f"Authorization: Basic {credentials}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    if status != 200:
        raise ConnectionError(f"ws-token answered {status}")
    return str(json.loads(body)["token"])


class RecordingClient(SyncClient):
    """Records every connection that reached ``welcome`` and every disconnect."""

    recorder: Recorder

    def on_connect(self, welcome: WelcomeFrame) -> None:
        self.recorder.record("connect", url=self.url)

    def on_disconnect(self, code: int | None, reason: str) -> None:
        self.recorder.record("disconnect", code=code, reason=reason)


class Worker:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.name: str = plan["client"]
        self.workdir = Path(plan["workdir"])
        self.stream: str = plan["stream"]
        self.rng = random.Random(plan["seed"])
        self.recorder = Recorder(self.workdir / f"{self.name}.jsonl")
        self.proxies = [Proxy(port) for port in plan["ports"]]
        self.queue: collections.deque[dict[str, Any]] = collections.deque()
        self.wakeup = asyncio.Event()
        self.busy = False
        self.count = 0
        self.token_turn = 0
        self.deleted: set[str] = set()

    async def token(self) -> str:
        auth = (self.plan["auth"][0], self.plan["auth"][1])
        errors = []
        for _ in self.proxies:
            proxy = self.proxies[self.token_turn % len(self.proxies)]
            self.token_turn += 1
            try:
                return await fetch_token(proxy.port, auth)
            except Exception as exc:  # try the next server
                errors.append(repr(exc))
        raise ConnectionError("; ".join(errors))

    def on_event(self, event: StreamEvent) -> None:
        rec = self.recorder.record
        if isinstance(event, OpApplied):
            op = event.op
            mutation = str(op.mutation) if op.mutation is not None else None
            rec("op", epoch=op.epoch, seq=op.seq, model=op.model, pk=str(op.pk), op=op.op,
                mutation=mutation)  # fmt: skip
            if op.op == "delete":
                self.deleted.add(str(op.pk))
        elif isinstance(event, SnapshotLoaded):
            rec("snapshot", epoch=event.epoch, seq=event.seq)
        elif isinstance(event, StreamReset):
            rec("reset", epoch=event.epoch, reason=event.reason)
        elif isinstance(event, GapDetected):
            rec("gap", seq=event.seq, received_seq=event.received_seq)

    def new_mutation(self, handle: StreamHandle) -> dict[str, Any]:
        self.count += 1
        n, rng = self.count, self.rng
        cards = [o for (model, _), o in sorted(handle.objects.items()) if model == CARD]
        cards = [card for card in cards if str(card.pk) not in self.deleted]
        base = {"id": str(uuid.uuid4()), "stream": self.stream, "model": CARD}
        roll = rng.random()
        if not cards or roll < 0.07:
            fields = {"board": self.plan["board"], "title": f"{self.name} card {n}", "body": ""}
            return {**base, "pk": str(uuid.uuid4()), "op": "create", "fields": fields}
        card = rng.choice(cards)
        if roll < 0.10 and len(cards) > 4:
            return {**base, "pk": str(card.pk), "op": "delete", "fields": {}}
        if roll < 0.12:  # a create of an object that exists: the server says `exists`
            fields = {"board": self.plan["board"], "title": f"{self.name} again {n}"}
            return {**base, "pk": str(card.pk), "op": "create", "fields": fields}
        kind = rng.choice(["body", "done", "likes", "likes", "rank", "title"])
        mutation = {**base, "pk": str(card.pk), "op": "update"}
        if kind == "body":
            return {**mutation, "fields": {"body": f"{self.name} {n}"}}
        if kind == "done":
            return {**mutation, "fields": {"done": not card.fields.get("done")}}
        if kind == "likes":
            return {**mutation, "fields": {"likes": {"delta": rng.choice([-1, 1, 2, 3])}}}
        value: Any = rng.randrange(1000) if kind == "rank" else f"{self.name} title {n}"
        # Now and then from an older view, as a client that was away would.
        base_version = max(1, card.version - rng.choice([0, 0, 0, 1, 3]))
        return {**mutation, "fields": {kind: value}, "base_version": base_version}

    async def generate(self, handle: StreamHandle, t0: float) -> None:
        stop = t0 + self.plan["duration"]
        while time.time() < stop:
            await asyncio.sleep(self.rng.expovariate(self.plan["rate"]))
            if time.time() >= stop:
                break
            mutation = self.new_mutation(handle)
            self.recorder.record("invoke", id=mutation["id"], mutation=mutation)
            self.queue.append(mutation)
            self.wakeup.set()

    async def send(self, client: SyncClient) -> None:
        while True:
            while not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            batch = [self.queue.popleft() for _ in range(min(self.plan["batch"], len(self.queue)))]
            self.busy = True
            try:
                results = await client.mutate(batch)
            except ClientError as exc:
                for mutation in batch:
                    self.recorder.record("fail", id=mutation["id"], error=repr(exc))
                continue
            finally:
                self.busy = False
            retry = []
            for mutation, result in zip(batch, results, strict=True):
                error = result.error
                if result.status == "rejected" and error is not None and error.retry:
                    self.recorder.record("note", id=mutation["id"], retry=error.code)
                    retry.append(mutation)
                    continue
                self.recorder.record(
                    "ack",
                    id=mutation["id"],
                    status=result.status,
                    seq=result.seq,
                    version=result.version,
                    error=None
                    if error is None
                    else {"code": error.code, "fields": error.fields or {}},
                )
            if retry:
                self.queue.extendleft(reversed(retry))
                await asyncio.sleep(0.5)

    async def faults(self, t0: float) -> None:
        for fault in sorted(self.plan["faults"], key=lambda f: float(f["at"])):
            await asyncio.sleep(max(0.0, t0 + fault["at"] - time.time()))
            self.recorder.record("fault", what=fault["kind"])
            if fault["kind"] == "offline":
                for proxy in self.proxies:
                    proxy.offline = True
            for proxy in self.proxies:
                proxy.cut()
            if fault["kind"] == "offline":
                await asyncio.sleep(max(0.0, t0 + fault["until"] - time.time()))
                for proxy in self.proxies:
                    proxy.offline = False
                self.recorder.record("fault", what="online")

    async def wait_file(self, name: str, deadline: float) -> dict[str, Any]:
        path = self.workdir / name
        while not path.exists():
            if time.time() > deadline:
                raise TimeoutError(f"no {name}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.05)  # written with one write, but be sure it is complete
        return dict(json.loads(path.read_text()))

    async def run(self) -> int:
        for proxy in self.proxies:
            await proxy.start()
        urls = [f"ws://127.0.0.1:{proxy.port}/sync/ws/" for proxy in self.proxies]
        client = RecordingClient(
            urls,
            client_id=self.name,
            token=self.token,
            backoff=Backoff(base=0.2, cap=2.0),
            open_timeout=5.0,
            max_mutation_attempts=4,
        )
        client.recorder = self.recorder
        self.recorder.record("start", pid=os.getpid())
        await client.connect()
        handle = await client.subscribe(self.stream)
        # No await between these two: nothing is applied in between.
        assert handle.epoch is not None
        self.recorder.record("snapshot", epoch=handle.epoch, seq=handle.seq)
        handle.add_listener(self.on_event)
        self.recorder.record("ready")
        go = await self.wait_file("go.json", time.time() + self.plan["ready_timeout"])
        t0 = float(go["t0"])
        tasks = [
            asyncio.create_task(self.send(client)),
            asyncio.create_task(self.faults(t0)),
        ]
        await self.generate(handle, t0)
        # Drain: every invoked mutation gets its answer (or the deadline passes).
        deadline = t0 + self.plan["duration"] + self.plan["drain_timeout"]
        while (self.queue or self.busy) and time.time() < deadline:
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for proxy in self.proxies:
            proxy.offline = False
        self.recorder.record("quiesced", unanswered=len(self.queue) + int(self.busy))
        (self.workdir / f"{self.name}.quiesced").write_text("1")
        head = await self.wait_file("head.json", deadline + self.plan["drain_timeout"])
        reached = True
        end = deadline + self.plan["drain_timeout"]
        while not (handle.epoch == head["epoch"] and handle.seq >= head["head"]):
            if time.time() > end:
                reached = False
                break
            with contextlib.suppress(TimeoutError):
                await handle.wait_for(head["head"], timeout=1.0)
        objects = [
            {"model": o.model, "pk": str(o.pk), "version": o.version, "fields": o.fields}
            for o in handle.objects.values()
        ]
        self.recorder.record("final", epoch=handle.epoch, seq=handle.seq, objects=objects)
        await client.close()
        self.recorder.close()
        return 0 if reached else 3


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    plan = json.loads(Path(sys.argv[1]).read_text())
    sys.exit(asyncio.run(Worker(plan).run()))


if __name__ == "__main__":
    main()
