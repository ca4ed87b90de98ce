"""The chaos run: client workers against two daphne processes, a seeded fault schedule,
a drain, then the checker.

:func:`run` needs a :class:`tests.live.servers.Cluster` on the current (PostgreSQL)
database, the stream of a board, and credentials of a user who may write there; it
returns a :class:`RunResult`, whose ``report()`` starts with the seed. It is used by
``tests/chaos/test_chaos.py`` and, for long runs, by ``scripts/chaos``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.checker import ClientHistory, LogOp, ServerState, Violation, check, key
from tests.chaos.history import load, summary
from tests.chaos.schedule import CLIENT_KINDS, TRIM_KEEP, Fault, schedule
from tests.live.servers import ROOT, Cluster

SERVERS = ("a", "b")
READY_TIMEOUT = 90.0
EXIT_TIMEOUT = 30.0


@dataclass
class Config:
    seed: int
    duration: float = 35.0
    clients: int = 4
    rate: float = 2.0
    """Mutations per second per client (on average)."""
    batch: int = 1
    """Mutations per ``mutate`` frame."""
    drain_timeout: float = 120.0
    """Seconds after the faults end for every mutation to be answered, and again for
    every client to reach the head."""


@dataclass
class RunResult:
    config: Config
    faults: list[Fault]
    histories: list[ClientHistory]
    server: ServerState
    violations: list[Violation]
    problems: list[str]
    """What went wrong in the harness itself (a worker that crashed or did not finish)."""
    workdir: Path
    elapsed: float
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.problems

    def report(self, tail: int = 40) -> str:
        lines = [
            f"chaos seed={self.config.seed} duration={self.config.duration:g}s "
            f"clients={self.config.clients} rate={self.config.rate:g}/s batch="
            f"{self.config.batch}: {'OK' if self.ok else 'FAILED'} in {self.elapsed:.1f}s",
            f"replay: SYNCAPP_CHAOS_SEED={self.config.seed} (or scripts/chaos --seed "
            f"{self.config.seed} --duration {self.config.duration:g} --clients "
            f"{self.config.clients})",
            f"log: {len(self.server.ops)} ops, head {self.server.head}, "
            f"{len(self.server.objects)} objects, {len(self.server.conflicts)} conflict rows",
            "faults:",
            *(f"  {fault}" for fault in self.faults),
            "clients:",
        ]
        for history in self.histories:
            counts = summary(history)
            shown = " ".join(f"{name}={counts[name]}" for name in sorted(counts))
            lines.append(f"  {history.client}: {shown}")
        if self.problems:
            lines += ["problems:", *(f"  {problem}" for problem in self.problems)]
        if self.violations:
            lines.append(f"violations ({len(self.violations)}):")
            lines += [f"  {violation}" for violation in self.violations[:50]]
        if not self.ok:
            lines.append(f"workdir: {self.workdir}")
            for name, text in self.logs.items():
                lines.append(f"--- tail of {name}")
                lines += text.splitlines()[-tail:]
        return "\n".join(lines)


class Clients:
    """The worker processes."""

    def __init__(self, config: Config, workdir: Path, plans: list[dict[str, Any]]) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for plan in plans:
            path = workdir / f"{plan['client']}.plan.json"
            path.write_text(json.dumps(plan))
            with (workdir / f"{plan['client']}.log").open("ab") as out:
                self.procs[plan["client"]] = subprocess.Popen(
                    [sys.executable, "-m", "tests.chaos.worker", str(path)],
                    cwd=ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )

    def has(self, client: str, text: str) -> bool:
        path = self.workdir / f"{client}.jsonl"
        return path.exists() and text in path.read_text(encoding="utf-8")

    def wait(self, what: str, done: Callable[[str], bool], timeout: float) -> list[str]:
        """Wait until ``done(client)`` for every live client; the problems otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [c for c, p in self.procs.items() if p.poll() is None and not done(c)]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        problems = [f"{c} did not get to {what} in {timeout:.0f}s" for c in waiting]
        for client, proc in self.procs.items():
            if proc.poll() is not None and proc.returncode != 0 and not done(client):
                problems.append(f"{client} exited with {proc.returncode} before {what}")
        return problems

    def signal(self, client: str, sig: int) -> None:
        proc = self.procs[client]
        if proc.poll() is None:
            proc.send_signal(sig)

    def finish(self, timeout: float) -> list[str]:
        problems = []
        deadline = time.monotonic() + timeout
        for client, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                problems.append(f"{client} did not exit; killed")
                proc.kill()
                proc.wait()
            if proc.returncode == 3:
                problems.append(f"{client} did not reach the head")
            elif proc.returncode != 0:
                problems.append(f"{client} exited with {proc.returncode}")
        return problems

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


def read_log(stream: str) -> dict[int, LogOp]:
    """The ops of ``stream`` still in the log, by seq."""
    from syncapp import encoding
    from syncapp.models import Op

    return {
        op.seq: LogOp(
            seq=op.seq,
            model=op.model,
            pk=op.object_pk,
            op=op.kind,
            fields=json.loads(encoding.dumps(op.fields)),
            version=op.version,
            mutation=str(op.mutation_id) if op.mutation_id is not None else None,
        )
        for op in Op.objects.filter(stream__name=stream).order_by("seq")
    }


def read_server_state(
    stream: str, setup_seqs: set[int], archive: dict[int, LogOp] | None = None
) -> ServerState:
    """The stream's log (with ``archive``: what was read before a trim deleted it),
    objects (a snapshot of the tables) and conflict rows."""
    from syncapp import encoding, oplog, registry
    from syncapp.models import Conflict, Stream

    head = Stream.objects.get(name=stream)
    log = {**(archive or {}), **read_log(stream)}
    ops = [log[seq] for seq in sorted(log)]
    snap = oplog.snapshot(stream)
    objects = {
        key(o["model"], o["pk"]): (int(o["version"]), json.loads(encoding.dumps(o["fields"])))
        for o in snap.objects
    }
    conflicts = {
        (str(mutation), name)
        for mutation, name in Conflict.objects.filter(stream=stream).values_list(
            "mutation_id", "field"
        )
    }
    counters: dict[str, frozenset[str]] = {}
    manual: dict[str, frozenset[str]] = {}
    for model in registry.synced_models():
        spec = registry.spec_for(model)
        counters[spec.label] = frozenset(spec.counter_fields)
        manual[spec.label] = frozenset(n for n in spec.fields if spec.policy_for(n) == "manual")
    return ServerState(
        stream=stream,
        epoch=head.epoch,
        head=head.head,
        ops=ops,
        objects=objects,
        conflicts=conflicts,
        setup_seqs=setup_seqs,
        counter_fields=counters,
        manual_fields=manual,
    )


def _plans(
    config: Config,
    workdir: Path,
    cluster: Cluster,
    stream: str,
    board: str,
    auth: tuple[str, str],
    faults: list[Fault],
) -> list[dict[str, Any]]:
    names = [f"c{index + 1}" for index in range(config.clients)]
    ports = [cluster.daphnes[name].port for name in SERVERS]
    plans = []
    for index, name in enumerate(names):
        own = [
            {"at": f.at, "kind": f.kind, "until": f.at + f.duration}
            for f in faults
            if f.target == name and f.kind in ("disconnect", "offline")
        ]
        plans.append(
            {
                "client": name,
                "seed": config.seed * 1000 + index,
                "workdir": str(workdir),
                "ports": ports[index % len(ports) :] + ports[: index % len(ports)],
                "auth": list(auth),
                "stream": stream,
                "board": board,
                "duration": config.duration,
                "rate": config.rate,
                "batch": config.batch,
                "drain_timeout": config.drain_timeout,
                "ready_timeout": READY_TIMEOUT,
                "faults": own,
            }
        )
    return plans


def _actions(faults: list[Fault]) -> list[tuple[float, str, str]]:
    """The harness's own faults as (time, action, target), in time order."""
    actions = []
    for fault in faults:
        if fault.kind == "kill_server":
            actions += [
                (fault.at, "kill", fault.target),
                (fault.at + fault.duration, "start", fault.target),
            ]
        elif fault.kind == "restart_redis":
            actions += [
                (fault.at, "kill_redis", ""),
                (fault.at + fault.duration, "start_redis", ""),
            ]
        elif fault.kind == "trim_log":
            actions.append((fault.at, "trim", "log"))
        elif fault.kind == "pause_client":
            actions += [
                (fault.at, "stop", fault.target),
                (fault.at + fault.duration, "cont", fault.target),
            ]
    return sorted(actions)


def run(
    cluster: Cluster,
    config: Config,
    *,
    stream: str,
    board: str,
    auth: tuple[str, str],
    workdir: Path,
    log: Callable[[str], None] = lambda line: None,
) -> RunResult:
    """One chaos run; the database must hold the board, its setup ops and the user."""
    from syncapp import retention
    from syncapp.models import Op

    started = time.monotonic()
    archive: dict[int, LogOp] = {}
    setup_seqs = set(Op.objects.filter(stream__name=stream).values_list("seq", flat=True))
    daphnes = cluster.servers(*SERVERS)
    names = [f"c{index + 1}" for index in range(config.clients)]
    faults = schedule(config.seed, config.duration, names, list(SERVERS))
    log(f"chaos seed={config.seed}: {len(faults)} faults, workdir {workdir}")
    clients = Clients(
        config, workdir, _plans(config, workdir, cluster, stream, board, auth, faults)
    )
    problems: list[str] = []
    try:
        problems += clients.wait(
            "ready", lambda c: clients.has(c, '"type": "ready"'), READY_TIMEOUT
        )
        t0 = time.time() + 0.5
        (workdir / "go.json").write_text(json.dumps({"t0": t0}))
        for at, action, target in _actions(faults):
            time.sleep(max(0.0, t0 + at - time.time()))
            log(f"{time.time() - t0:6.1f}s {action} {target}")
            if action == "kill":
                cluster.daphnes[target].kill(signal.SIGKILL)
            elif action == "start":
                cluster.daphnes[target].spawn()  # not waited for: the schedule goes on
            elif action == "kill_redis":
                cluster.redis.kill(signal.SIGKILL)
            elif action == "start_redis":
                cluster.redis.start()
            elif action == "stop":
                clients.signal(target, signal.SIGSTOP)
            elif action == "cont":
                clients.signal(target, signal.SIGCONT)
            elif action == "trim":
                archive.update(read_log(stream))
                trimmed = retention.trim(stream, max_age=None, max_ops=TRIM_KEEP)
                log(f"{'':8}trimmed below seq {trimmed.oldest_seq}")
        time.sleep(max(0.0, t0 + config.duration - time.time()))
        # Heal: every server up, every client running.
        for name in names:
            clients.signal(name, signal.SIGCONT)
        for daphne in daphnes:
            if daphne.running:
                daphne.wait_ready()
        cluster.servers(*SERVERS)
        log(f"{time.time() - t0:6.1f}s healed; draining")
        problems += clients.wait(
            "quiesce",
            lambda c: (workdir / f"{c}.quiesced").exists(),
            config.drain_timeout + 30.0,
        )
        from syncapp.models import Stream

        head = Stream.objects.get(name=stream)
        (workdir / "head.json").write_text(json.dumps({"epoch": head.epoch, "head": head.head}))
        log(f"{time.time() - t0:6.1f}s head {head.head}; waiting for the clients to reach it")
        problems += clients.finish(config.drain_timeout + EXIT_TIMEOUT)
    finally:
        clients.kill_all()
    server = read_server_state(stream, setup_seqs, archive)
    histories = [load(name, workdir / f"{name}.jsonl") for name in names]
    violations = check(histories, server)
    logs = {
        **{
            f"client {name}": (workdir / f"{name}.log").read_text(errors="replace")
            for name in names
        },
        **{f"{p.label} {p.name}": p.tail() for p in cluster.processes()},
    }
    result = RunResult(
        config=config,
        faults=faults,
        histories=histories,
        server=server,
        violations=violations,
        problems=problems,
        workdir=workdir,
        elapsed=time.monotonic() - started,
        logs=logs,
    )
    log(result.report())
    return result


__all__ = ["CLIENT_KINDS", "Config", "RunResult", "read_server_state", "run"]
