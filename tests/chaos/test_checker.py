"""The checker on hand-built histories: a correct one passes, and each property, broken
alone, is reported (a checker that cannot fail proves nothing)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.chaos.checker import ClientHistory, LogOp, ServerState, Violation, check, key

CARD = "testapp.card"
X, Y = "x-card", "y-card"
M1, M2, M3, M4 = (f"0000000{n}-0000-4000-8000-000000000000" for n in range(1, 5))


def mutation(pk: str, op: str, fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"stream": "board:1", "model": CARD, "pk": pk, "op": op, "fields": fields, **extra}


def op(seq: int, pk: str, kind: str, fields: dict[str, Any], version: int, m: str | None) -> LogOp:
    return LogOp(seq=seq, model=CARD, pk=pk, op=kind, fields=fields, version=version, mutation=m)


def seen(log_op: LogOp) -> dict[str, Any]:
    return {
        "type": "op",
        "epoch": "e1",
        "seq": log_op.seq,
        "model": log_op.model,
        "pk": log_op.pk,
        "op": log_op.op,
        "mutation": log_op.mutation,
    }


def final(server: ServerState) -> dict[str, Any]:
    objects = [
        {"model": model, "pk": pk, "version": version, "fields": dict(fields)}
        for (model, pk), (version, fields) in server.objects.items()
    ]
    return {"type": "final", "epoch": server.epoch, "seq": server.head, "objects": objects}


def correct() -> tuple[list[ClientHistory], ServerState]:
    """Two clients; c1 edits and creates, c2 increments and has a manual conflict."""
    log = [
        op(1, X, "create", {"title": "t", "body": "", "likes": 0}, 1, None),
        op(2, X, "update", {"body": "c1"}, 2, M1),
        op(3, X, "update", {"likes": 2}, 3, M2),
        op(4, Y, "create", {"title": "y", "body": "", "likes": 0}, 1, M3),
    ]
    server = ServerState(
        stream="board:1",
        epoch="e1",
        head=4,
        ops=log,
        objects={
            key(CARD, X): (3, {"title": "t", "body": "c1", "likes": 2}),
            key(CARD, Y): (1, {"title": "y", "body": "", "likes": 0}),
        },
        conflicts={(M4, "title")},
        setup_seqs={1},
        counter_fields={CARD: frozenset({"likes"})},
        manual_fields={CARD: frozenset({"title"})},
    )
    c1 = [
        {"type": "snapshot", "epoch": "e1", "seq": 1},
        {"type": "invoke", "id": M1, "mutation": mutation(X, "update", {"body": "c1"})},
        {"type": "ack", "id": M1, "status": "applied", "seq": 2},
        seen(log[1]),
        seen(log[2]),
        {"type": "invoke", "id": M3, "mutation": mutation(Y, "create", {"title": "y"})},
        {"type": "ack", "id": M3, "status": "applied", "seq": 4},
        seen(log[3]),
        final(server),
    ]
    c2 = [
        {"type": "snapshot", "epoch": "e1", "seq": 2},
        {"type": "invoke", "id": M2, "mutation": mutation(X, "update", {"likes": {"delta": 2}})},
        {"type": "reset", "epoch": "e1", "reason": "trimmed"},
        {"type": "snapshot", "epoch": "e1", "seq": 2},
        {"type": "ack", "id": M2, "status": "applied", "seq": 3},
        seen(log[2]),
        {
            "type": "invoke",
            "id": M4,
            "mutation": mutation(X, "update", {"title": "c2"}, base_version=1),
        },
        {"type": "ack", "id": M4, "status": "conflict", "error": {"fields": {"title": ["..."]}}},
        seen(log[3]),
        final(server),
    ]
    return [ClientHistory("c1", c1), ClientHistory("c2", c2)], server


def kinds(violations: list[Violation]) -> set[str]:
    return {violation.kind for violation in violations}


def test_a_correct_history_passes():
    histories, server = correct()
    assert check(histories, server) == []


def test_lost_ack_an_applied_mutation_missing_from_the_log():
    histories, server = correct()
    # c1's edit was acknowledged at seq 2, but seq 2 in the log is someone else's.
    server.ops[1] = op(2, X, "update", {"body": "c1"}, 2, None)
    server.setup_seqs.add(2)
    histories[0].records[3]["mutation"] = None
    violations = check(histories, server)
    assert [v for v in violations if v.kind == "durable"] == [
        Violation("durable", "c1", f"mutation {M1} acked applied at seq 2, the log has it at []")
    ]


def test_an_ack_that_says_rejected_while_the_log_has_it_is_not_durable_either():
    histories, server = correct()
    histories[0].records[2] = {"type": "ack", "id": M1, "status": "rejected", "seq": None}
    assert kinds(check(histories, server)) == {"durable"}


def test_a_kept_manual_field_without_its_conflict_row():
    histories, server = correct()
    server.conflicts.clear()
    [violation] = check(histories, server)
    assert violation.kind == "durable"
    assert "no Conflict row" in violation.detail


def test_phantom_an_op_nobody_sent():
    histories, server = correct()
    stranger = "99999999-0000-4000-8000-000000000000"
    server.ops.append(op(5, X, "update", {"body": "?"}, 4, stranger))
    server.head = 5
    server.objects[key(CARD, X)] = (4, {"title": "t", "body": "?", "likes": 2})
    for history in histories:
        history.records[-1:] = [seen(server.ops[-1]), final(server)]
    violations = check(histories, server)
    assert kinds(violations) == {"phantom"}
    assert stranger in violations[0].detail


def test_phantom_an_op_for_another_object_than_its_mutation():
    histories, server = correct()
    server.ops[1] = op(2, Y, "update", {"body": "c1"}, 2, M1)
    for history in histories:
        for record in history.records:
            if record.get("seq") == 2 and record["type"] == "op":
                record["pk"] = Y
    assert "phantom" in kinds(check(histories, server))


def test_duplicate_a_mutation_applied_twice():
    histories, server = correct()
    server.ops.append(op(5, X, "update", {"likes": 4}, 4, M2))
    server.head = 5
    server.objects[key(CARD, X)] = (4, {"title": "t", "body": "c1", "likes": 4})
    for history in histories:
        history.records[-1:] = [seen(server.ops[-1]), final(server)]
    violations = check(histories, server)
    assert kinds(violations) == {"duplicate"}
    assert "seqs [3, 5]" in violations[0].detail


def test_effect_a_counter_that_lost_an_increment():
    histories, server = correct()
    server.objects[key(CARD, X)] = (3, {"title": "t", "body": "c1", "likes": 1})
    for history in histories:
        history.records[-1] = final(server)
    violations = check(histories, server)
    assert kinds(violations) == {"effect"}
    assert any("likes is 1, its deltas in the log sum to 2" in v.detail for v in violations)


def test_effect_an_op_whose_counter_value_is_not_the_sum():
    histories, server = correct()
    server.ops[2] = op(3, X, "update", {"likes": 5}, 3, M2)  # delta 2 from 0
    server.objects[key(CARD, X)] = (3, {"title": "t", "body": "c1", "likes": 5})
    for history in histories:
        history.records[-1] = final(server)
    assert kinds(check(histories, server)) == {"effect"}


def test_order_a_later_mutation_applied_before_an_earlier_one():
    histories, server = correct()
    records = histories[0].records
    # c1 invoked M3 first, then M1; the log has M1 (seq 2) before M3 (seq 4).
    records[1], records[5] = records[5], records[1]
    [violation] = check(histories, server)
    assert violation.kind == "order"
    assert violation.client == "c1"


def test_gap_a_client_that_skipped_a_seq():
    histories, server = correct()
    del histories[1].records[5]  # c2 never saw seq 3
    [violation] = check(histories, server)
    assert violation == Violation("gap", "c2", "op e1/4 after e1/2")


def test_gap_a_client_that_saw_an_op_twice():
    histories, server = correct()
    histories[0].records.insert(4, seen(server.ops[1]))
    assert kinds(check(histories, server)) == {"gap"}


def test_gap_a_snapshot_older_than_what_the_client_had_seen():
    histories, server = correct()
    histories[0].records[4:4] = [
        {"type": "reset", "epoch": "e1", "reason": "trimmed"},
        {"type": "snapshot", "epoch": "e1", "seq": 1},
        seen(server.ops[1]),
    ]
    [violation] = check(histories, server)
    assert violation.kind == "gap"
    assert "snapshot at 1 after having seen seq 2" in violation.detail


def test_gap_a_snapshot_without_a_reset():
    histories, server = correct()
    histories[0].records.insert(4, {"type": "snapshot", "epoch": "e1", "seq": 2})
    [violation] = check(histories, server)
    assert violation.kind == "gap"
    assert "without reset" in violation.detail


def test_gap_a_received_op_that_is_not_the_logs():
    histories, server = correct()
    histories[1].records[5]["mutation"] = M4
    [violation] = check(histories, server)
    assert violation.kind == "gap"
    assert "received seq 3" in violation.detail


def test_gap_a_client_that_never_reached_the_head():
    histories, server = correct()
    histories[1].records[-2:] = [
        {**final(server), "seq": 3, "objects": copy.deepcopy(final(server)["objects"])}
    ]
    [violation] = check(histories, server)
    assert violation == Violation("gap", "c2", "ended at e1/3, the server's head is e1/4")


def test_a_closed_client_owes_no_final_state_but_one_that_just_stopped_does():
    histories, server = correct()
    histories[1].records[-1:] = [{"type": "closed"}]  # a browser tab closed mid-run
    assert check(histories, server) == []
    histories[1].records[-1:] = []
    assert check(histories, server) == [Violation("gap", "c2", "no final state recorded")]
    # Closed, but what it saw before still counts.
    histories[1].records.append({"type": "closed"})
    histories[1].records[5]["mutation"] = M4
    assert kinds(check(histories, server)) == {"gap"}


@pytest.mark.parametrize("change", ["field", "version", "missing", "extra"])
def test_divergence_a_client_view_unlike_the_servers(change):
    histories, server = correct()
    objects = histories[0].records[-1]["objects"]
    if change == "field":
        objects[0]["fields"]["body"] = "stale"
    elif change == "version":
        objects[0]["version"] = 2
    elif change == "missing":
        del objects[1]
    else:
        objects.append({"model": CARD, "pk": "z", "version": 1, "fields": {}})
    [violation] = check(histories, server)
    assert violation.kind == "divergence"
    assert violation.client == "c1"


def test_effect_tables_unlike_the_log():
    histories, server = correct()
    server.objects[key(CARD, Y)] = (1, {"title": "changed by raw SQL", "body": "", "likes": 0})
    for history in histories:
        history.records[-1] = final(server)
    [violation] = check(histories, server)
    assert violation.kind == "effect"
    assert "replayed from the log" in violation.detail


def test_a_log_with_a_hole():
    histories, server = correct()
    del server.ops[2]
    assert "gap" in kinds(check(histories, server))
