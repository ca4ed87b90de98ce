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
