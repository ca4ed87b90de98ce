"""Faults on real daphne processes (issue 7; the map of every fault to its tests is in
``tests/test_faults.py``).

- A process SIGKILLed between the commit of a mutation and its answer: the retry of the
  same mutation on another process gets the stored result, and there is one op.
- Channel-layer capacity overflow (channels_redis drops what does not fit) and group
  membership expiry (channels_redis forgets members after ``group_expiry``): every
  client still ends with every op once, in order, read from the log.

Each test has its own daphne processes, with the environment its fault needs (see
``tests/live_settings.py``), and stops them when it is done.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from channels.db import database_sync_to_async

from tests.helpers import ops
from tests.live.clients import (
    TIMEOUT,
    Writer,
    mutation_ids,
    new_card,
    request,
    seqs,
)
from tests.live.servers import Cluster, Daphne, free_port

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

KILL_TITLE = "kill this process after the commit"
CAPACITY = 3
GROUP_EXPIRY = 2  # seconds; channels_redis takes whole seconds
RECOVERY_TIMEOUT = 20.0

# The environment of each group of processes, by name prefix.
FAULT_ENV = {
    "kill": {"SYNCAPP_LIVE_KILL_TITLE": KILL_TITLE},
    "cap": {"SYNCAPP_LIVE_LAYER_CAPACITY": str(CAPACITY)},
    "exp": {"SYNCAPP_LIVE_GROUP_EXPIRY": str(GROUP_EXPIRY)},
}


class FaultCluster(Cluster):
    """A Cluster whose daphne processes get the environment of their fault."""

    def servers(self, *names: str, kind: type[Daphne] = Daphne) -> list[Daphne]:
        for name in names:
            if name not in self.daphnes:
                env = {
                    "SYNCAPP_LIVE_DB_NAME": self.db_name,
                    "SYNCAPP_LIVE_REDIS_URL": self.redis.url,
                    **FAULT_ENV[name.split("-")[0]],
                }
                log = self.workdir / f"daphne-{name}.log"
                self.daphnes[name] = kind(name, free_port(), log, env)
        return super().servers(*names, kind=kind)


@pytest.fixture(scope="module")
def _cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Overrides tests/live/conftest.py's: the same, with each fault's environment."""
    cluster = FaultCluster(tmp_path_factory.mktemp("live-faults"))
    yield cluster
    cluster.stop()


@pytest.fixture
def stop_after(live: Cluster) -> Iterator[list[Daphne]]:
    """Daphne processes to stop when the test ends (each test has its own)."""
    servers: list[Daphne] = []
    yield servers
    for server in servers:
        server.stop()


def one_op_of(stream: str, mutation_id: str) -> Any:
    """The one op that the mutation ``mutation_id`` made in ``stream``."""
    made = [op for op in ops(stream) if str(op.mutation_id) == mutation_id]
    assert len(made) == 1, made
    return made[0]


async def post_mutation(server: Daphne, auth: Any, mutation: dict[str, Any]) -> Any:
    return await request(
        server,
        "POST",
        "/sync/api/mutations/",
        auth=auth,
        body={"client_id": "retrying-client", "mutations": [mutation]},
    )


# A process killed between the commit and the answer.


async def test_rest_retry_after_a_kill_between_commit_and_answer_gets_the_stored_result(
    live, auth, stream, board, stop_after
):
    doomed, other = live.servers("kill-rest", "kill-rest2")
    stop_after.extend([doomed, other])
    mutation = new_card(stream, board.pk, KILL_TITLE)

    with pytest.raises((ConnectionError, asyncio.IncompleteReadError, OSError)):
        await post_mutation(doomed, auth, mutation)  # no answer: the process is gone
    assert doomed.proc is not None
    assert await asyncio.to_thread(doomed.proc.wait, TIMEOUT) == -signal.SIGKILL
    # It died after the commit: the card, its op and the stored result are durable.
    op = await database_sync_to_async(one_op_of)(stream, mutation["id"])

    # The client retries the same mutation, same id, on the other process.
    response = await post_mutation(other, auth, mutation)
    assert response.status == 200, response
    [result] = response.json()["results"]
    assert result["id"] == mutation["id"]
    assert result["status"] == "applied"
    assert result["seq"] == op.seq
    assert result["version"] == op.version
    assert result["object"]["pk"] == mutation["pk"]
    assert result["object"]["fields"]["title"] == KILL_TITLE
    # Retried again: the same answer, and still one op (nor did the retry kill `other`).
    again = await post_mutation(other, auth, mutation)
    assert again.json()["results"] == [result]
    await database_sync_to_async(one_op_of)(stream, mutation["id"])
    assert other.running


async def test_ws_retry_after_a_kill_between_commit_and_ack_gets_the_stored_result(
    live, auth, stream, board, ws_client, stop_after
):
    doomed, other = live.servers("kill-ws", "kill-ws2")
    stop_after.extend([doomed, other])
    watcher = ws_client("watcher")  # follows the stream on the process that lives
    await watcher.connect(other)
    await watcher.subscribe(stream)
    mutator = ws_client("mutator")
    await mutator.connect(doomed)
    mutation = new_card(stream, board.pk, KILL_TITLE)
    frame = {"type": "mutate", "ref": 1, "mutations": [mutation]}

    await mutator.send(frame)
    await mutator.until(mutator.closed.is_set, what="the killed process to drop the socket")
    assert mutator.acks == []
    assert mutator.close_codes == [1006]  # killed: no close frame
    op = await database_sync_to_async(one_op_of)(stream, mutation["id"])
    await watcher.until(lambda: watcher.last(stream) >= op.seq)

    # The client resends the unanswered frame, same ids, on the other process.
    await mutator.connect(other)
    await mutator.send(frame)
    await mutator.until(lambda: bool(mutator.acks))
    [ack] = mutator.acks
    assert ack["ref"] == 1
    [result] = ack["results"]
    assert (result["id"], result["status"], result["seq"]) == (mutation["id"], "applied", op.seq)
    assert result["object"]["fields"]["title"] == KILL_TITLE
    await database_sync_to_async(one_op_of)(stream, mutation["id"])
    # The watcher saw the op once: the next op it sees after it is the next write's.
    [marker] = await Writer(auth, stream, board.pk).write(other, 1)
    await watcher.until(lambda: watcher.last(stream) >= marker["seq"])
    assert mutation_ids(watcher.ops[stream]) == [mutation["id"], marker["id"]]
    assert seqs(watcher.ops[stream]) == [op.seq, op.seq + 1] == [1, 2]
    assert watcher.problems == mutator.problems == []


# The channel layer drops messages.


def hub_queues(url: str) -> dict[str, int]:
    """Messages waiting in each process's hub channel, in the private Redis."""
    client = redis.Redis.from_url(url)
    try:
        return {
            key.decode(): int(client.zcard(key))
            for key in client.scan_iter(match="*syncapp.hub.*")
            if client.type(key) == b"zset"
        }
    finally:
        client.close()


async def test_capacity_overflow_drops_broadcasts_and_clients_still_get_every_op(
    live, auth, stream, board, ws_client, stop_after
):
    a, b = live.servers("cap-a", "cap-b")  # capacity 3 on both: the sender applies it
    stop_after.extend([a, b])
    client = ws_client("tab-a")
    await client.connect(a)
    await client.subscribe(stream)
    writer = Writer(auth, stream, board.pk)
    await writer.write(b, 2)
    await client.until(lambda: client.last(stream) >= 2)

    # a stops reading its channel (SIGSTOP): its queue fills up, the rest is dropped.
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)
    try:
        await writer.write(b, 10)
        queues = hub_queues(live.redis.url)
        assert max(queues.values()) == CAPACITY, queues  # a's: full, 7 ops dropped
    finally:
        a.proc.send_signal(signal.SIGCONT)

    # a reads the 3 that fit, finds the gap and reads the rest from the log.
    mark = a.mark()
    await client.until(lambda: client.last(stream) >= 12, timeout=RECOVERY_TIMEOUT)
    await a.wait_output(f"Feed {stream} read ops", since=mark)
    await writer.write(b, 2)  # and goes on live
    await client.until(lambda: client.last(stream) >= 14, timeout=RECOVERY_TIMEOUT)
    expected_seqs, expected_ids = writer.expected()
    assert seqs(client.ops[stream]) == expected_seqs == list(range(1, 15))
    assert mutation_ids(client.ops[stream]) == expected_ids
    assert client.problems == []
    assert not client.closed.is_set()


async def test_group_expiry_loses_memberships_and_clients_still_get_every_op(
    live, auth, stream, board, ws_client, stop_after
):
    a, b = live.servers("exp-a", "exp-b")  # group_expiry 2 s, GROUP_REFRESH 1 hour
    stop_after.extend([a, b])
    clients = [ws_client("tab-a"), ws_client("tab-b")]
    for client, server in zip(clients, (a, b), strict=True):
        await client.connect(server)
        await client.subscribe(stream)
    mark = a.mark()
    writer = Writer(auth, stream, board.pk)

    # Write, from both processes, through two expiries of a's memberships (the second
    # after a rejoin, when all of a's groups expire together and ops go unheard).
    rejoins = 0
    while rejoins < 2:
        assert len(writer.results) < 400, f"a never noticed its groups expired:\n{a.tail()}"
        await writer.write(b, 1)
        await writer.write(a, 1)
        with open(a.log, "rb") as log:
            log.seek(mark)
            rejoins = log.read().count(b"Channel-layer groups stopped delivering; rejoining")
    await writer.write(b, 3)

    expected_seqs, expected_ids = writer.expected()
    assert expected_seqs == list(range(1, writer.head + 1))
    # Ops broadcast while a's memberships were gone were read from the log.
    await a.wait_output(f"Feed {stream} read ops", since=mark)
    for client in clients:
        await client.until(lambda c=client: c.last(stream) >= writer.head, timeout=RECOVERY_TIMEOUT)
        assert seqs(client.ops[stream]) == expected_seqs
        assert mutation_ids(client.ops[stream]) == expected_ids
        assert client.problems == []
        assert not client.closed.is_set()
