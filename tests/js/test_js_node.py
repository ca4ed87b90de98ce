"""The JavaScript unit tests (tests/js/*.test.js) in node: ``run-node.mjs`` runs them and
exits non-zero on a failure or when none ran. IndexedDB tests skip in node; tests/browser
runs the same tests in Chromium, where they do not."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = "tests/js/run-node.mjs"
# Node runs .js files as ES modules with this flag (20.10+), or on its own from 22.7 on,
# where it detects module syntax.
MODULE_FLAG = "--experimental-default-type=module"
SKIP_MESSAGE = (
    "install Node.js 20+ to run the JS unit tests in node; "
    "they also run in Chromium in tests/browser/"
)
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed, (\d+) skipped$", re.MULTILINE)


def node_command() -> list[str]:
    """How to run node on ES modules here, or skip."""
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"node is not on PATH: {SKIP_MESSAGE}")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    match = re.match(r"v(\d+)\.(\d+)", version)
    if match is None or int(match[1]) < 20:
        pytest.skip(f"node {version or '(unknown version)'} is too old: {SKIP_MESSAGE}")
    probe = subprocess.run([node, MODULE_FLAG, "-e", "0"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [node, MODULE_FLAG]
    if (int(match[1]), int(match[2])) >= (22, 7):
        return [node]
    pytest.skip(f"node {version} cannot load .js files as ES modules: {SKIP_MESSAGE}")


def test_js_unit_tests_pass_in_node() -> None:
    result = subprocess.run(
        [*node_command(), RUNNER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = f"{result.stdout}\n{result.stderr}".strip()
    summary = SUMMARY.search(result.stdout)
    assert summary is not None, f"no summary line from {RUNNER}:\n{output}"
    passed, failed, _skipped = (int(n) for n in summary.groups())
    print(summary[0])
    assert result.returncode == 0, f"{RUNNER} exited with {result.returncode}:\n{output}"
    assert failed == 0, output
    assert passed > 0, f"no JS test ran:\n{output}"
