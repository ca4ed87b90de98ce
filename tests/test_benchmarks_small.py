"""The benchmark suite's small run: it starts its own servers and clients, and fails if
any op is lost. No timing is asserted (CI machines are loaded); only that every workload
ran and lost nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    os.environ.get("SYNCAPP_TEST_DB") == "postgresql",
    reason="starts its own servers and databases: once, in the SQLite pass",
)


def test_small_benchmarks_lose_nothing() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run"), "--small", "--only", "fanout,resume"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "fanout: lost 0" in result.stdout, output
    assert "resume: lost 0" in result.stdout, output
    assert "== total: lost 0" in result.stdout, output


def test_a_server_runs_a_full_collection_when_the_harness_settles_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import gcsettle

    code = (
        "import sys, time\n"
        "from benchmarks import gcsettle\n"
        "gcsettle.install()\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    env = {**os.environ, "BENCH_GC_LOG": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline() == "ready\n"
        monkeypatch.setenv("BENCH_GC_SETTLE", "1")
        gcsettle.settle([proc.pid])
        logged: list[str] = []  # only the gc lines: coverage may write its own
        while not logged or not logged[-1].startswith("gc: settled in "):
            line = proc.stderr.readline()
            assert line, f"the process ended without settling: {logged}"
            if line.startswith("gc: "):
                logged.append(line)
        assert logged[0].startswith("gc: full collection ")
    finally:
        proc.kill()
        proc.wait()
