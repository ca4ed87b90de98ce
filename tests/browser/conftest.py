"""Tests in a real Chromium (Playwright for Python, *async* API) against the demo project
served by a real daphne.

Requirements: Debian's Chromium at ``/usr/bin/chromium`` (``apt-get install -y
chromium``; ``SYNCAPP_CHROMIUM`` points elsewhere) and the ``playwright`` package from
requirements.txt. Never run ``playwright install``: its browser download is not used.
Without them the tests skip, or fail when ``SYNCAPP_REQUIRE_SERVICES=1`` (CI). They run
only in the SQLite pass of ``scripts/test``: they start their own demo server with its
own SQLite database, so the PostgreSQL pass would only repeat them.

Why async: the sync API keeps its event loop marked as running in the main thread
between calls, so once a session-wide sync browser exists, every later async test
("Runner.run() cannot be called from a running event loop") and every sync ORM call
(``SynchronousOnlyOperation``) in the rest of the suite breaks. With the async API
the browser lives in pytest-asyncio's *session* loop, which runs only while a browser
test runs. So:

* Write browser tests as ``async def`` tests. This conftest marks every test in
  tests/browser ``browser`` and, when async, ``asyncio(loop_scope="session")``.
* Async fixtures of your own that touch Playwright objects must say
  ``@pytest_asyncio.fixture(loop_scope="session")`` (the default fixture loop is the
  function's, and Playwright objects only work in the loop that made them).
* Import Playwright at module level in test files freely (it is in requirements.txt).

Fixtures:

* ``demo_server`` (module): :class:`~tests.browser.servers.DemoServer`, with ``url``,
  ``db_path``, ``sql(query, params)``, ``stop()``, ``start()``, ``restart()`` (same
  port), ``log_tail()``. Each test module gets a fresh server and database; the tests of
  a module share them (use distinct names/lists where that matters); a server a test
  stopped (or crashed) is started again before the next test. ``restart()`` blocks
  for a second or two; ``await asyncio.to_thread(demo_server.restart)`` keeps the
  browser's events flowing meanwhile.
* ``new_context(**options)`` (async factory): a browser context with ``base_url`` set to
  the demo server, so ``page.goto("/")`` works; each context has its own cookies (one
  per user or "device"). Pass ``base_url=`` to use another server (the demo server is
  then not started). Actions time out after 15 s (``DEFAULT_TIMEOUT_MS``), ``expect``
  after Playwright's 5 s. Closed after the test.
* ``new_page(username=None, **options)``: a page in a new context, logged in as
  ``username`` when given.
* ``login(page, username, password="demo")``: logs in through /accounts/login/ and
  waits to land on /.
* ``browser`` / ``playwright_instance`` (session): the Chromium and Playwright.
* ``static_server`` (session): the repository root over plain HTTP
  (``static_server.url + "/tests/js/index.html"``).

``pytest -m "not browser"`` leaves them out. On failure the report shows the pages'
console messages, uncaught page errors and failed requests, and the tail of every
running demo server's output (also when daphne died during the test).

Example::

    from playwright.async_api import expect

    async def test_alice_sees_the_list(new_page, demo_server):
        page = await new_page("alice")
        await expect(page.locator("body")).to_contain_text("Groceries")
        assert ("Groceries",) in demo_server.sql("select name from todos_todolist")
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from tests.browser.servers import DemoServer, StaticServer
from tests.conftest import service_missing

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, Playwright

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("SYNCAPP_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Containers often have a tiny /dev/shm; Debian's wrapper script means to add this
    # flag then, but its check can misfire (it did here), so always add it.
    "--disable-dev-shm-usage",
]
DEFAULT_TIMEOUT_MS = 15_000
PASSWORD = "demo"

try:
    import playwright.async_api  # noqa: F401
except ImportError as error:
    PLAYWRIGHT_MISSING: str | None = (
        f"playwright cannot be imported ({error}): `.venv/bin/pip install -r requirements.txt` "
        "(and Chromium from apt: `sudo apt-get install -y chromium`)"
    )
else:
    PLAYWRIGHT_MISSING = None

_running_servers: set[DemoServer] = set()
_browser_log_key = pytest.StashKey[list[str]]()


# --- collection, skipping and failure reports --------------------------------------------


def _in_browser_dir(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests/browser's tests ``browser``, and run its async tests in the session's
    event loop, where the Playwright objects live. (This hook sees all items.)"""
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if _in_browser_dir(item):
            item.add_marker(pytest.mark.browser)
            if pytest_asyncio.is_async_test(item):
                item.add_marker(session_loop, append=False)


class _Unimportable(pytest.Item):
    """Stands for a test module that is not imported because Playwright is missing
    (pytest_runtest_setup skips or fails it with the reason)."""

    def runtest(self) -> None:
        pytest.fail(PLAYWRIGHT_MISSING or "playwright is missing")


class _UnimportableModule(pytest.File):
    def collect(self) -> list[pytest.Item]:
        return [_Unimportable.from_parent(self, name="playwright")]


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Any:
    """Without Playwright, a test module here (which may import it at the top) becomes
    one placeholder test that says how to install it, instead of a collection error."""
    if PLAYWRIGHT_MISSING and HERE in module_path.resolve().parents:
        return _UnimportableModule.from_parent(parent, path=module_path)
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of a browser test: skip in the PostgreSQL pass, and skip (or
    fail, with SYNCAPP_REQUIRE_SERVICES=1) without Chromium or Playwright."""
    if os.environ.get("SYNCAPP_TEST_DB", "sqlite") != "sqlite":
        pytest.skip(
            "runs in the SQLite pass: the browser tests start their own demo server with "
            "its own SQLite database"
        )
    if not os.access(CHROMIUM, os.X_OK):
        service_missing(
            f"Chromium is not installed at {CHROMIUM}: install it with "
            "`sudo apt-get install -y chromium` (or set SYNCAPP_CHROMIUM to a Chromium "
            "binary; `playwright install` is not used)"
        )
    if PLAYWRIGHT_MISSING:
        service_missing(PLAYWRIGHT_MISSING)
    for server in list(_running_servers):
        if not server.running:
            # A previous test stopped it or crashed it: every test starts with it running.
            server.start()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """A failing browser test shows the browser's messages and the servers' output."""
    report = yield
    if report.failed and _in_browser_dir(item):
        messages = item.stash.get(_browser_log_key, [])
        if messages:
            report.sections.append(("browser console and errors", "\n".join(messages)))
        for server in list(_running_servers):
            code = server.exit_code
            state = f"exited with code {code}" if code is not None else "running"
            if server.proc is None:
                state = "stopped"
            report.sections.append((f"demo server {server.url} ({state}) output", server.tail()))
    return report


# --- servers -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _demo_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo database made once per session (``migrate``, then ``manage.py demo``:
    about 3 s); each ``demo_server`` starts from a copy of it."""
    server = DemoServer(tmp_path_factory.mktemp("demo-template"))
    server.setup_database()
    return server.db_path


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, _demo_database: Path
) -> Iterator[DemoServer]:
    """The demo project under daphne on a free loopback port, with a fresh SQLite
    database (migrated, ``manage.py demo`` run); stopped when the module ends."""
    server = DemoServer(tmp_path_factory.mktemp("demo"))
    try:
        # The commands exited, so SQLite checkpointed its WAL into the file: copy it.
        shutil.copyfile(_demo_database, server.db_path)
        _running_servers.add(server)
        server.start()
        yield server
    finally:
        _running_servers.discard(server)
        server.stop()


@pytest.fixture(scope="session")
def static_server() -> Iterator[StaticServer]:
    """The repository root over plain HTTP on a free loopback port."""
    server = StaticServer()
    server.start()
    yield server
    server.stop()


# --- Playwright --------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def playwright_instance() -> AsyncIterator[Playwright]:
    """Playwright's driver (async API), for the whole session."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        yield playwright


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(playwright_instance: Playwright) -> AsyncIterator[Browser]:
    """Headless Chromium from apt (``CHROMIUM``), shared by the session; tests isolate
    themselves with contexts (``new_context``)."""
    browser = await playwright_instance.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    await browser.close()


class NewContext(Protocol):
    async def __call__(self, **options: Any) -> BrowserContext: ...


class NewPage(Protocol):
    async def __call__(self, username: str | None = None, **options: Any) -> Page: ...


class Login(Protocol):
    async def __call__(self, page: Page, username: str, password: str = PASSWORD) -> None: ...


def _record_browser_messages(context: BrowserContext, log: list[str]) -> None:
    """Collect what a context's pages print, throw and fail to load into ``log``."""

    def on_console(message: Any) -> None:
        location = message.location or {}
        url = location.get("url")
        where = f" ({url}:{location.get('lineNumber')})" if url else ""
        log.append(f"[console.{message.type}] {message.text}{where}")

    def on_weberror(error: Any) -> None:
        log.append(f"[page error] {error.error}")

    def on_requestfailed(request: Any) -> None:
        log.append(f"[request failed] {request.method} {request.url}: {request.failure}")

    context.on("console", on_console)
    context.on("weberror", on_weberror)
    context.on("requestfailed", on_requestfailed)


@pytest_asyncio.fixture(loop_scope="session")
async def new_context(
    request: pytest.FixtureRequest, browser: Browser
) -> AsyncIterator[NewContext]:
    """Makes browser contexts (``await new_context(**options)``, options as for
    ``Browser.new_context``); ``base_url`` defaults to the demo server's URL. Their
    console output is recorded for the failure report; all are closed after the test."""
    log = request.node.stash.setdefault(_browser_log_key, [])
    contexts: list[BrowserContext] = []

    async def make(**options: Any) -> BrowserContext:
        if "base_url" not in options:
            options["base_url"] = request.getfixturevalue("demo_server").url
        context = await browser.new_context(**options)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        _record_browser_messages(context, log)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        try:
            await context.close()
        except Exception as error:  # a crashed browser must not hide the test's failure
            log.append(f"[closing a context failed] {error}")


async def _login(page: Page, username: str, password: str = PASSWORD) -> None:
    await page.goto("/accounts/login/")
    await page.locator('input[name="username"]').fill(username)
    password_field = page.locator('input[name="password"]')
    await password_field.fill(password)
    async with page.expect_navigation():
        await password_field.press("Enter")  # submits the form, whatever its buttons
    if not _at_root(page.url):
        alert = page.get_by_role("alert")
        why = await alert.first.inner_text() if await alert.count() else "no message"
        raise AssertionError(f"logging in as {username!r} failed at {page.url}: {why}")


def _at_root(url: str) -> bool:
    return urlsplit(url).path == "/"


@pytest.fixture
def login() -> Login:
    """``await login(page, "alice")``: log in through the demo's form at /accounts/login/
    (password "demo") and wait to land on /."""
    return _login


@pytest.fixture
def new_page(new_context: NewContext) -> NewPage:
    """``await new_page("alice")``: a page in a context of its own, logged in as the user
    (anonymous without one); options go to ``new_context``."""

    async def make(username: str | None = None, **options: Any) -> Page:
        context = await new_context(**options)
        page = await context.new_page()
        if username is not None:
            await _login(page, username)
        return page

    return make
