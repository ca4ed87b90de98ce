"""The convergence checker: a history of what clients did and saw, the server's final
state, and the properties that must hold between them.

A plain module (no Django, no processes): any harness that records histories in this
shape can feed it, the Python-client workers of ``tests/chaos/worker.py`` as well as
browser tabs.

API
---

``check(histories, server) -> list[Violation]``; an empty list means the run was correct.

``histories`` is a list of :class:`ClientHistory`, one per client: its name and its
records in the order the client made them. Each record is a dict with a ``type``:

- ``{"type": "invoke", "id", "mutation": {"stream", "model", "pk", "op", "fields",
  "base_version"?}}``: the client asked for a mutation (``id`` is its idempotency key,
  kept through every retry). Records in invocation order: the per-client order property
  is about this order.
- ``{"type": "ack", "id", "status", "seq"?, "error"?: {"code", "fields"?}}``: the
  server's final result (``applied``, ``conflict``, ``rejected``, ``gone``).
- ``{"type": "fail", "id", "error"}``: the client gave up without a result (the outcome
  is unknown: it may or may not be in the log). An invocation with neither ``ack`` nor
  ``fail`` is unknown too.
- ``{"type": "snapshot", "epoch", "seq"}``: the client's view was replaced by a snapshot.
- ``{"type": "op", "epoch", "seq", "model", "pk", "op", "mutation"}``: an op was applied
  to the client's view.
- ``{"type": "reset", "epoch", "reason"}``: the server said the position cannot resume.
- ``{"type": "final", "epoch", "seq", "objects": [{"model", "pk", "version", "fields"}]}``:
  the client's authoritative view once the run was over (last record).
- ``{"type": "closed"}``: the client went away before the end (a browser tab that was
  closed): no ``final`` is expected of it; what it recorded before is checked as usual.

Other types (``fault``, ``gap``, ``note``...) are kept for reading and ignored here.

``server`` is a :class:`ServerState`: the stream's epoch and head, its op log
(:class:`LogOp`, in seq order), the objects as the model tables hold them, the
``(mutation id, field)`` of every ``Conflict`` row, and ``setup_seqs``: the seqs written
before the clients started (ops without a mutation id that no client sent).

Properties (each :class:`Violation` names one in ``kind``):

- ``durable``: an ``applied`` or ``conflict`` ack with a seq has its op in the log at
  that seq, with that mutation id; an ack with another status, or without a seq, has no
  op; a ``conflict`` op holds none of the kept fields; a field kept by the ``manual``
  policy has its ``Conflict`` row. ``effect``: counter fields equal the start value plus
  every delta in the log (each once), and replaying the whole log gives the model tables.
- ``phantom``: every op in the log was sent by a client (its mutation id was invoked,
  for the same object and kind), or is a setup op.
- ``duplicate``: no mutation id has more than one op.
- ``order``: each client's mutations appear in the log in the order it invoked them.
- ``gap``: each client saw a snapshot, then every seq once, in order, in one epoch, or a
  ``reset`` followed by a snapshot at least as new; every op it saw is the log's op at
  that seq; it ended at the server's head.
- ``divergence``: each client's final view equals the server's objects.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

ObjectKey = tuple[str, str]


@dataclass(frozen=True)
class Violation:
    kind: str
    client: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.client}: {self.detail}"


@dataclass
class ClientHistory:
    client: str
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class LogOp:
    seq: int
    model: str
    pk: str
    op: str
    fields: dict[str, Any]
    version: int
    mutation: str | None


@dataclass
class ServerState:
    stream: str
    epoch: str
    head: int
    ops: list[LogOp]
    objects: dict[ObjectKey, tuple[int, dict[str, Any]]]
    conflicts: set[tuple[str, str]] = field(default_factory=set)
    setup_seqs: set[int] = field(default_factory=set)
    counter_fields: dict[str, frozenset[str]] = field(default_factory=dict)
    """Counter fields per model label: their deltas are summed by the ``effect`` check."""
    manual_fields: dict[str, frozenset[str]] = field(default_factory=dict)
    """``manual`` fields per model label: a write kept there must leave a Conflict row."""


def key(model: str, pk: Any) -> ObjectKey:
    return (str(model), str(pk))


def check(histories: list[ClientHistory], server: ServerState) -> list[Violation]:
    """Every violation of the properties in the module docstring; empty when none."""
    invoked: dict[str, tuple[str, dict[str, Any]]] = {}
    for history in histories:
        for record in history.records:
            if record.get("type") == "invoke":
                invoked[str(record["id"])] = (history.client, record["mutation"])
    by_mutation: dict[str, list[LogOp]] = defaultdict(list)
    for op in server.ops:
        if op.mutation is not None:
            by_mutation[op.mutation].append(op)
    violations: list[Violation] = []
    violations += _log_shape(server)
    violations += _phantoms(server, invoked)
    violations += _duplicates(server, by_mutation, invoked)
    violations += _effects(server, invoked)
    for history in histories:
        violations += _durable(history, server, by_mutation, invoked)
        violations += _order(history, by_mutation)
        violations += _delivery(history, server)
        violations += _convergence(history, server)
    return violations


def _log_shape(server: ServerState) -> list[Violation]:
    seqs = [op.seq for op in server.ops]
    expected = list(range(seqs[0], seqs[0] + len(seqs))) if seqs else []
    found = []
    if seqs != expected or (seqs and seqs[-1] != server.head):
        found.append(
            Violation("gap", "server", f"log seqs are not 1..head={server.head} without gaps")
        )
    return found


def _phantoms(
    server: ServerState, invoked: dict[str, tuple[str, dict[str, Any]]]
) -> list[Violation]:
    found = []
    for op in server.ops:
        if op.mutation is None:
            if op.seq not in server.setup_seqs:
                found.append(Violation("phantom", "server", f"seq {op.seq} has no mutation id"))
            continue
        sent = invoked.get(op.mutation)
        if sent is None:
            found.append(
                Violation("phantom", "server", f"seq {op.seq}: mutation {op.mutation} never sent")
            )
            continue
        mutation = sent[1]
        same_object = key(mutation["model"], mutation["pk"]) == key(op.model, op.pk)
        if not same_object or mutation["op"] != op.op:
            found.append(
                Violation(
                    "phantom",
                    sent[0],
                    f"seq {op.seq} ({op.op} {op.model}:{op.pk}) does not match mutation "
                    f"{op.mutation} ({mutation['op']} {mutation['model']}:{mutation['pk']})",
                )
            )
    return found


def _duplicates(
    server: ServerState,
    by_mutation: dict[str, list[LogOp]],
    invoked: dict[str, tuple[str, dict[str, Any]]],
) -> list[Violation]:
    return [
        Violation(
            "duplicate",
            invoked.get(mutation, ("?", {}))[0],
            f"mutation {mutation} applied {len(ops)} times: seqs {[op.seq for op in ops]}",
        )
        for mutation, ops in by_mutation.items()
        if len(ops) > 1
    ]


def _effects(
    server: ServerState, invoked: dict[str, tuple[str, dict[str, Any]]]
) -> list[Violation]:
    """Counters sum their deltas once each; the log replayed gives the tables."""
    found = []
    replayed: dict[ObjectKey, tuple[int, dict[str, Any]]] = {}
    counters: dict[tuple[ObjectKey, str], int] = {}
    for op in server.ops:
        obj = key(op.model, op.pk)
        names = server.counter_fields.get(op.model, frozenset())
        if op.op == "delete":
            replayed.pop(obj, None)
            for name in names:
                counters.pop((obj, name), None)
            continue
        fields = dict(replayed[obj][1]) if op.op == "update" and obj in replayed else {}
        fields.update(op.fields)
        replayed[obj] = (op.version, fields)
        for name in names & op.fields.keys():
            if op.op == "create" or op.mutation is None:
                counters[(obj, name)] = int(op.fields[name])
                continue
            sent = invoked.get(op.mutation)
            value = sent[1]["fields"].get(name) if sent else None
            delta = value.get("delta") if isinstance(value, dict) else None
            if delta is None:
                counters[(obj, name)] = int(op.fields[name])
                continue
            counters[(obj, name)] = counters.get((obj, name), 0) + int(delta)
            if op.fields[name] != counters[(obj, name)]:
                found.append(
                    Violation(
                        "effect",
                        sent[0] if sent else "server",
                        f"seq {op.seq}: {op.model}:{op.pk}.{name} became {op.fields[name]}, "
                        f"the deltas so far sum to {counters[(obj, name)]}",
                    )
                )
                counters[(obj, name)] = int(op.fields[name])
    for (obj, name), expected in counters.items():
        actual = server.objects.get(obj, (0, {}))[1].get(name)
        if actual != expected:
            found.append(
                Violation(
                    "effect",
                    "server",
                    f"{obj[0]}:{obj[1]}.{name} is {actual}, its deltas in the log sum to "
                    f"{expected}",
                )
            )
    for obj in sorted(replayed.keys() | server.objects.keys()):
        if replayed.get(obj) != server.objects.get(obj):
            found.append(
                Violation(
                    "effect",
                    "server",
                    f"{obj[0]}:{obj[1]} replayed from the log is {replayed.get(obj)}, "
                    f"the table holds {server.objects.get(obj)}",
                )
            )
    return found


def _durable(
    history: ClientHistory,
    server: ServerState,
    by_mutation: dict[str, list[LogOp]],
    invoked: dict[str, tuple[str, dict[str, Any]]],
) -> list[Violation]:
    found = []
    for record in history.records:
        if record.get("type") != "ack":
            continue
        mutation, status, seq = str(record["id"]), record["status"], record.get("seq")
        ops = by_mutation.get(mutation, [])
        error = record.get("error") or {}
        if status in ("applied", "conflict") and seq is not None:
            if not any(op.seq == seq for op in ops):
                found.append(
                    Violation(
                        "durable",
                        history.client,
                        f"mutation {mutation} acked {status} at seq {seq}, "
                        f"the log has it at {[op.seq for op in ops]}",
                    )
                )
            kept = set((error.get("fields") or {}).keys())
            for op in ops:
                if kept & op.fields.keys():
                    found.append(
                        Violation(
                            "durable",
                            history.client,
                            f"mutation {mutation}: the server said it kept {sorted(kept)}, "
                            f"seq {op.seq} wrote {sorted(kept & op.fields.keys())}",
                        )
                    )
        elif ops:
            found.append(
                Violation(
                    "durable",
                    history.client,
                    f"mutation {mutation} acked {status} without a seq, "
                    f"the log has it at {[op.seq for op in ops]}",
                )
            )
        if status == "conflict" and mutation in invoked:
            manual = server.manual_fields.get(invoked[mutation][1]["model"], frozenset())
            for name in (error.get("fields") or {}).keys() & manual:
                if (mutation, name) not in server.conflicts:
                    found.append(
                        Violation(
                            "durable",
                            history.client,
                            f"mutation {mutation}: {name} kept for a person to resolve, "
                            "but there is no Conflict row",
                        )
                    )
    return found


def _order(history: ClientHistory, by_mutation: dict[str, list[LogOp]]) -> list[Violation]:
    last: tuple[int, str] | None = None
    found = []
    for record in history.records:
        if record.get("type") != "invoke":
            continue
        ops = by_mutation.get(str(record["id"]))
        if not ops:
            continue
        seq = ops[0].seq
        if last is not None and seq < last[0]:
            found.append(
                Violation(
                    "order",
                    history.client,
                    f"mutation {record['id']} (seq {seq}) was invoked after {last[1]} "
                    f"(seq {last[0]}) but applied before it",
                )
            )
        if last is None or seq > last[0]:
            last = (seq, str(record["id"]))
    return found


def _delivery(history: ClientHistory, server: ServerState) -> list[Violation]:
    log = {op.seq: op for op in server.ops}
    found = []
    epoch: str | None = None
    seq: int | None = None
    reset = False
    final = None
    for record in history.records:
        kind = record.get("type")
        if kind == "snapshot":
            if seq is not None and record["epoch"] == epoch and record["seq"] < seq:
                found.append(
                    Violation(
                        "gap",
                        history.client,
                        f"snapshot at {record['seq']} after having seen seq {seq}",
                    )
                )
            if seq is not None and record["epoch"] == epoch and not reset:
                found.append(
                    Violation("gap", history.client, f"a snapshot at {record['seq']} without reset")
                )
            epoch, seq, reset = record["epoch"], record["seq"], False
        elif kind == "reset":
            reset = True
        elif kind == "op":
            if seq is None or record["epoch"] != epoch or record["seq"] != seq + 1:
                found.append(
                    Violation(
                        "gap",
                        history.client,
                        f"op {record['epoch']}/{record['seq']} after {epoch}/{seq}",
                    )
                )
            expected = log.get(record["seq"])
            if record["epoch"] == server.epoch and (
                expected is None
                or expected.mutation != record.get("mutation")
                or key(expected.model, expected.pk) != key(record["model"], record["pk"])
                or expected.op != record["op"]
            ):
                found.append(
                    Violation(
                        "gap",
                        history.client,
                        f"received seq {record['seq']} ({record['op']} {record['model']}:"
                        f"{record['pk']}, mutation {record.get('mutation')}), the log has "
                        f"{expected}",
                    )
                )
            epoch, seq = record["epoch"], record["seq"]
        elif kind == "final":
            final = record
    closed = any(record.get("type") == "closed" for record in history.records)
    if final is None and not closed:
        found.append(Violation("gap", history.client, "no final state recorded"))
    elif final is not None and (final["epoch"], final["seq"]) != (server.epoch, server.head):
        found.append(
            Violation(
                "gap",
                history.client,
                f"ended at {final['epoch']}/{final['seq']}, the server's head is "
                f"{server.epoch}/{server.head}",
            )
        )
    return found


def _convergence(history: ClientHistory, server: ServerState) -> list[Violation]:
    final = next((r for r in reversed(history.records) if r.get("type") == "final"), None)
    if final is None:
        return []
    view = {key(o["model"], o["pk"]): (o["version"], o["fields"]) for o in final["objects"]}
    found = []
    for obj in sorted(view.keys() | server.objects.keys()):
        if view.get(obj) != server.objects.get(obj):
            found.append(
                Violation(
                    "divergence",
                    history.client,
                    f"{obj[0]}:{obj[1]} is {view.get(obj)}, the server has "
                    f"{server.objects.get(obj)}",
                )
            )
    return found
