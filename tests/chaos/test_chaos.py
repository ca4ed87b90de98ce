"""The short chaos run of the suite: clients in their own processes mutate shared cards
on two daphne processes while a seeded schedule kills a server, restarts Redis, pauses
a client, cuts connections and takes a client offline; then the checker
(tests/chaos/checker.py) must find nothing.

``SYNCAPP_CHAOS_SEED`` replays another seed (a failure prints its seed);
``SYNCAPP_CHAOS_DURATION``, ``SYNCAPP_CHAOS_CLIENTS``, ``SYNCAPP_CHAOS_RATE`` and
``SYNCAPP_CHAOS_BATCH`` make a longer or harder run (``scripts/chaos`` sets them).
"""

from __future__ import annotations

import os

import pytest

from tests.chaos.harness import Config, run
from tests.chaos.schedule import KINDS
from tests.testapp.models import Card

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

SEED = int(os.environ.get("SYNCAPP_CHAOS_SEED", "7"))
CARDS = 6


def config() -> Config:
    return Config(
        seed=SEED,
        duration=float(os.environ.get("SYNCAPP_CHAOS_DURATION", "35")),
        clients=int(os.environ.get("SYNCAPP_CHAOS_CLIENTS", "4")),
        rate=float(os.environ.get("SYNCAPP_CHAOS_RATE", "2")),
        batch=int(os.environ.get("SYNCAPP_CHAOS_BATCH", "1")),
    )


def test_chaos_clients_converge_with_every_acknowledged_mutation_once(
    live, auth, stream, board, tmp_path
):
    for index in range(CARDS):
        Card.objects.create(board=board, title=f"card {index}")
    result = run(
        live, config(), stream=stream, board=str(board.pk), auth=auth, workdir=tmp_path, log=print
    )
    report = result.report()
    assert result.ok, report

    # The run was not vacuous: every kind of fault happened, every client made mutations
    # that were acknowledged, some conflicted, and the faults reached the clients.
    assert {fault.kind for fault in result.faults} >= set(KINDS), report
    statuses: dict[str, int] = {}
    for history in result.histories:
        records = history.records
        acks = [r for r in records if r["type"] == "ack"]
        assert len(acks) >= 10, report
        assert len(acks) == sum(1 for r in records if r["type"] == "invoke"), report
        assert sum(1 for r in records if r["type"] == "connect") >= 1, report
        for ack in acks:
            statuses[ack["status"]] = statuses.get(ack["status"], 0) + 1
    assert statuses.get("applied", 0) > 0, report
    assert statuses.get("conflict", 0) > 0, report
    assert len(result.server.ops) > CARDS + 10 * len(result.histories), report
    for fault in result.faults:
        found = [h for h in result.histories if h.client == fault.target]
        if not found:
            continue
        history = found[0]
        # A client cut off or killed under reconnected (its connections counted).
        if fault.kind in ("disconnect", "offline"):
            assert sum(1 for r in history.records if r["type"] == "connect") >= 2, report
        if fault.kind == "offline":
            kinds = [r["type"] if r["type"] != "fault" else r["what"] for r in history.records]
            start, end = kinds.index("offline"), kinds.index("online")
            # It kept making mutations while offline; they were sent when it was back.
            assert "invoke" in kinds[start:end], report
