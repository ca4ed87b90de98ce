"""The JavaScript unit tests (tests/js/) in Chromium: tests/js/index.html runs them and
sets ``window.__jsTestResults = {passed, failed, skipped, results: [{name, ok, error}]}``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import NewContext
from tests.browser.servers import StaticServer
from tests.live.servers import ROOT

INDEX = "tests/js/index.html"
TIMEOUT_MS = 60_000


async def run_js_tests(
    new_context: NewContext, static_server: StaticServer, path: str = INDEX
) -> dict[str, Any]:
    """Open ``path`` (relative to the repository root) and return its
    ``window.__jsTestResults`` once set (and not ``done: false``)."""
    if not (ROOT / path).exists():
        pytest.fail(f"{path} is missing: it runs the JavaScript unit tests")
    context = await new_context(base_url=static_server.url)
    page = await context.new_page()
    await page.goto(f"/{path}")
    try:
        await page.wait_for_function(
            "() => window.__jsTestResults && window.__jsTestResults.done !== false",
            timeout=TIMEOUT_MS,
        )
    except Exception:
        pytest.fail(
            f"{path} did not set window.__jsTestResults within {TIMEOUT_MS / 1000:.0f} s "
            "(see the browser console in the report)"
        )
    results: dict[str, Any] = await page.evaluate("() => window.__jsTestResults")
    return results


async def test_js_unit_tests_pass(new_context: NewContext, static_server: StaticServer) -> None:
    results = await run_js_tests(new_context, static_server)
    entries = results.get("results") or []
    summary = (
        f"JS unit tests: {results.get('passed')} passed, {results.get('failed')} failed, "
        f"{results.get('skipped')} skipped"
    )
    print(summary)
    for entry in entries:
        if entry.get("skipped"):
            print(f"SKIP {entry.get('name')}: {entry.get('error')}")
    failures = "\n".join(
        f"FAIL {entry.get('name')}:\n{entry.get('error')}"
        for entry in entries
        if not entry.get("ok")
    )
    assert results.get("failed") == 0, f"{summary}\n{failures}"
    assert not failures, f"{summary}\n{failures}"
    assert (results.get("passed") or 0) > 0, f"{summary}: no JS test ran"
