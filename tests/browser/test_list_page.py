"""The demo's list page in Chromium: optimistic edits, rollback, offline work that
survives a reload and lands exactly once (from the page or its service worker), and the
back/forward cache.

The page talks to a real daphne; the WebSocket is routed through Playwright where a
test needs to hold the server's answers back."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from playwright.async_api import BrowserContext, Locator, Page, Playwright, WebSocketRoute, expect

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, DEFAULT_TIMEOUT_MS, Login, NewContext
from tests.browser.servers import DemoServer

PENDING = re.compile(r"\bpending\b")
PENDING_IDS = """async () => {
  const { openPersist } = await import('/static/syncapp/persist.js');
  const persist = await openPersist('syncapp');
  const ids = (await persist.allPending()).map((m) => m.id);
  persist.close();
  return ids;
}"""


def list_id(server: DemoServer, name: str = "Groceries") -> str:
    (row,) = server.sql("select id from todos_todolist where name = ?", (name,))
    raw = str(row[0]).replace("-", "")
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


async def open_list(context: BrowserContext, login: Login, server: DemoServer) -> Page:
    page = await context.new_page()
    await login(page, "alice")
    await page.goto(f"/lists/{list_id(server)}/")
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    await expect(page.locator("li.todo").first).to_be_visible()
    return page


async def todo(page: Page, title: str) -> Locator:
    """The row of the todo titled ``title`` in the page's view (waits for it)."""
    handle = await page.wait_for_function(
        """(title) => {
          const todos = window.syncDemo?.stream.objects('todos.todo') ?? [];
          const found = todos.find((o) => o.fields.title === title);
          return found ? String(found.pk) : false;
        }""",
        arg=title,
    )
    pk = await handle.json_value()
    return page.locator(f'li.todo[data-pk="{pk}"]')


async def add_todo(page: Page, title: str) -> None:
    await page.locator("#new-todo input[name=title]").fill(title)
    await page.locator("#new-todo input[name=title]").press("Enter")


async def test_a_toggle_shows_before_the_server_answers(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    context = await new_context()
    held: list[str] = []
    gate = {"hold": False}
    routes: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            if gate["hold"]:
                held.append(str(message))
            else:
                ws.send(message)

        server.on_message(from_server)
        routes.append(ws)

    await context.route_web_socket("**/sync/ws/**", route)
    page = await open_list(context, login, demo_server)
    row = await todo(page, "Milk")
    toggle = row.locator("input.toggle")
    await expect(toggle).not_to_be_checked()

    gate["hold"] = True
    await toggle.click()
    # Checked and marked pending while the server's ack and op are held back.
    await expect(toggle).to_be_checked()
    await expect(row).to_have_class(PENDING)
    await expect(page.locator("#status")).to_have_attribute("data-pending", "1")
    # The server has applied it; the page has not heard yet and shows it all the same.
    for _ in range(100):
        if demo_server.sql("select completed from todos_todo where title = 'Milk'") == [(1,)]:
            break
        await asyncio.sleep(0.1)
    assert demo_server.sql("select completed from todos_todo where title = 'Milk'") == [(1,)]
    for _ in range(100):  # the ack leaves the server just after the commit
        if any('"ack"' in str(frame) for frame in held):
            break
        await asyncio.sleep(0.1)
    assert any('"ack"' in str(frame) for frame in held)
    await expect(row).to_have_class(PENDING)

    gate["hold"] = False
    for frame in held:
        routes[-1].send(frame)
    await expect(row).not_to_have_class(PENDING)
    await expect(toggle).to_be_checked()
    await expect(page.locator("#status")).to_have_attribute("data-pending", "0")


async def test_a_rejected_edit_rolls_back_with_a_message(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    page = await open_list(await new_context(), login, demo_server)
    title = (await todo(page, "Bread")).locator("input.title")
    # The page caps titles at the model's max_length (500); a page that did not (an
    # older version, a rule only the server knows) gets a rejection from the server.
    await title.evaluate("(input) => input.removeAttribute('maxlength')")
    await title.fill("B" * 501)
    await title.press("Enter")
    toast = page.locator('#toasts .toast[data-kind="rejected"]')
    await expect(toast).to_be_visible()
    await expect(toast).to_contain_text("500 characters")
    await expect(title).to_have_value("Bread")
    assert demo_server.sql("select count(*) from todos_todo where title = 'Bread'") == [(1,)]


async def test_offline_edits_survive_a_reload_and_land_exactly_once(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    context = await new_context()
    page = await open_list(context, login, demo_server)
    # The service worker controls the page and has its shell before the network goes.
    await page.wait_for_function(
        """async () => {
          const cache = await caches.open('syncapp-shell-v1');
          const cached = Boolean(await cache.match(location.href));
          return Boolean(navigator.serviceWorker.controller) && cached;
        }""",
        timeout=15000,
    )
    watcher = await open_list(await new_context(), login, demo_server)

    await context.set_offline(True)
    await expect(page.locator("#status")).to_have_attribute("data-state", "offline")
    await add_todo(page, "Oat milk")
    await add_todo(page, "Apples")
    await (await todo(page, "Coffee")).locator("input.toggle").click()
    coffee = (await todo(page, "Coffee")).locator("input.title")
    await coffee.fill("Coffee beans")
    await coffee.press("Enter")
    await expect(page.locator("#status")).to_have_attribute("data-pending", "4")
    await expect(page.locator("#status")).to_contain_text("4 pending")
    pending = await page.evaluate(PENDING_IDS)
    assert len(pending) == 4

    # Reload without network: the page, its state and its pending edits come back.
    await page.reload()
    await expect(page.locator("li.todo.pending")).to_have_count(3)
    for title in ("Oat milk", "Apples", "Coffee beans"):
        await expect(await todo(page, title)).to_be_visible()
    await expect((await todo(page, "Coffee beans")).locator("input.toggle")).to_be_checked()
    await expect(page.locator("#status")).to_have_attribute("data-pending", "4")
    assert sorted(await page.evaluate(PENDING_IDS)) == sorted(pending)

    await context.set_offline(False)
    await expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=15000)
    await expect(page.locator("#status")).to_have_attribute("data-pending", "0", timeout=15000)
    await expect(page.locator("li.todo.pending")).to_have_count(0)
    for title in ("Oat milk", "Apples", "Coffee beans"):
        await expect(await todo(watcher, title)).to_be_visible()
    assert await page.evaluate(PENDING_IDS) == []

    # Each edit is one op on the server, however often it was sent.
    for mutation in pending:
        ops = demo_server.sql(
            "select count(*) from syncapp_op where mutation_id = ?", (mutation.replace("-", ""),)
        )
        assert ops == [(1,)], mutation
    titles = [row[0] for row in demo_server.sql("select title from todos_todo")]
    assert titles.count("Oat milk") == 1
    assert titles.count("Apples") == 1
    assert "Coffee beans" in titles
    # And both pages show what the server has.
    server_view = sorted(
        demo_server.sql(
            "select title, completed from todos_todo where list_id = ?",
            (list_id(demo_server).replace("-", ""),),
        )
    )
    for each in (page, watcher):
        shown = await each.evaluate(
            """() => window.syncDemo.stream.objects('todos.todo')
                 .map((o) => [o.fields.title, o.fields.completed ? 1 : 0])"""
        )
        assert sorted(tuple(item) for item in shown) == server_view


async def test_the_service_worker_sends_the_queue_without_the_page(
    new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    context = await new_context()
    page = await open_list(context, login, demo_server)
    await page.wait_for_function(
        "async () => Boolean((await navigator.serviceWorker.ready).active)", timeout=15000
    )
    await context.set_offline(True)
    await expect(page.locator("#status")).to_have_attribute("data-state", "offline")
    await add_todo(page, "Sent by the worker")
    await expect(page.locator("#status")).to_have_attribute("data-pending", "1")
    (mutation,) = await page.evaluate(PENDING_IDS)
    # The page goes; only the service worker is left to send it.
    await page.close()
    await context.set_offline(False)
    page = await context.new_page()
    await page.goto("/accounts/login/")  # a page without a client, for the CDP session

    # What Background Sync does when the network returns: fire the worker's sync event.
    session = await context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    session.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda event: registrations.extend(event["registrations"]),
    )
    await session.send("ServiceWorker.enable")
    for _ in range(50):
        if registrations:
            break
        await asyncio.sleep(0.1)
    (registration,) = [r for r in registrations if not r.get("isDeleted")]
    await session.send(
        "ServiceWorker.dispatchSyncEvent",
        {
            "origin": demo_server.url,
            "registrationId": registration["registrationId"],
            "tag": "syncapp-flush",
            "lastChance": False,
        },
    )
    for _ in range(100):
        rows = demo_server.sql(
            "select count(*) from syncapp_op where mutation_id = ?", (mutation.replace("-", ""),)
        )
        if rows == [(1,)]:
            break
        await asyncio.sleep(0.1)
    assert rows == [(1,)]
    assert demo_server.sql(
        "select count(*) from todos_todo where title = 'Sent by the worker'"
    ) == [(1,)]
    # The worker forgot what it sent: nothing is pending any more.
    await page.wait_for_function(f"async () => (await ({PENDING_IDS})()).length === 0")
    assert registration["scopeURL"] == demo_server.url + "/"


async def test_the_page_enters_the_back_forward_cache_and_resumes(
    playwright_instance: Playwright, new_context: NewContext, login: Login, demo_server: DemoServer
) -> None:
    # Playwright turns the back/forward cache off by default; this browser keeps it.
    browser = await playwright_instance.chromium.launch(
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        ignore_default_args=["--disable-back-forward-cache"],
    )
    try:
        context = await browser.new_context(base_url=demo_server.url)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        page = await open_list(context, login, demo_server)
        cdp = await context.new_cdp_session(page)
        await cdp.send("Page.enable")
        refused: list[Any] = []
        cdp.on("Page.backForwardCacheNotUsed", lambda event: refused.append(event))
        await page.evaluate("() => { window.sameDocument = true; }")
        await page.goto("/accounts/login/")
        watcher = await open_list(await new_context(), login, demo_server)
        await add_todo(watcher, "Added while alice was away")
        await page.go_back(wait_until="commit")  # a page from the cache fires no load
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
        # The same document came back (no reload), and it caught up.
        assert await page.evaluate("() => window.sameDocument === true"), refused
        assert refused == []
        await expect(await todo(page, "Added while alice was away")).to_be_visible()
    finally:
        await browser.close()
