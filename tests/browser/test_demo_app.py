"""The demo app in Chromium, as people use it: two users on one list page, presence
(cursors and typing), a title conflict resolved in the admin, the htmx index, and the
live op log page.

Every test makes a list of its own (the module's tests share one demo server), works
only through the pages' UI, and checks the outcome on the other pages and, where it
matters, in the server's database. Cross-browser waits allow ``CROSS_MS``: the machine
may be loaded. Timings are printed (``pytest -s``), never asserted."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from playwright.async_api import Locator, Page, Request, Route, WebSocketRoute, expect

from tests.browser.conftest import NewPage
from tests.browser.servers import DemoServer

CROSS_MS = 15_000  # an op from one browser to another, on a loaded machine
PENDING = re.compile(r"(^|\s)pending(\s|$)")
DONE = re.compile(r"(^|\s)done(\s|$)")

# The pk of the todo whose title input shows `title` (the value is a property, not an
# attribute, so CSS selectors cannot find it).
FIND_TODO = """(title) => {
  const input = [...document.querySelectorAll('#todos li.todo input.title')]
    .find((i) => i.value === title);
  return input ? input.closest('li.todo').dataset.pk : null;
}"""


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


def db_pk(pk: str) -> str:
    """A UUID as Django keeps it in SQLite: 32 hex digits, no dashes."""
    return uuid.UUID(pk).hex


async def wait_live(page: Page) -> None:
    await expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=CROSS_MS)


async def create_list(page: Page, name: str) -> str:
    """Make a list through the index page's form; returns its pk once the page shows it."""
    await page.goto("/")
    await wait_live(page)
    await page.locator("#new-list-name").fill(name)
    await page.locator("#new-list").get_by_role("button", name="New list").click()
    item = list_item(page, name)
    await expect(item).to_have_count(1, timeout=CROSS_MS)
    sync_object = await item.get_attribute("sync-object")
    assert sync_object is not None
    assert sync_object.startswith("todos.todolist:"), sync_object
    return sync_object.split(":", 1)[1]


def list_item(page: Page, name: str) -> Locator:
    """The row of the list ``name`` bound to its real key (not an optimistic placeholder,
    which shows until the create is answered)."""
    return page.locator('#lists li.list-item[sync-object]:not([sync-object*=":pending-"])').filter(
        has=page.locator("span.list-name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


async def open_list(page: Page, list_pk: str) -> None:
    """Open a list page and wait until it is live and has rendered the list's todos."""
    await page.goto(f"/lists/{list_pk}/")
    await wait_live(page)
    # #empty goes once there are todos, or says the list is empty once it is known.
    await page.wait_for_function(
        "() => { const e = document.getElementById('empty');"
        " return e.hidden || e.dataset.loading === 'false'; }"
    )


async def add_todo(page: Page, title: str) -> None:
    field = page.locator("#new-todo input[name=title]")
    await field.fill(title)
    await field.press("Enter")


async def todo_pk(page: Page, title: str, timeout: float = CROSS_MS) -> str:
    """Wait until the page shows a todo titled `title`; its pk."""
    handle = await page.wait_for_function(FIND_TODO, arg=title, timeout=timeout)
    pk = await handle.json_value()
    assert isinstance(pk, str)
    return pk


def todo(page: Page, pk: str) -> Locator:
    return page.locator(f'#todos li.todo[data-pk="{pk}"]')


async def timed(
    action: Callable[[], Awaitable[object]], seen: Callable[[], Awaitable[object]]
) -> float:
    """Milliseconds from the start of `action` until `seen` returns (both awaited)."""
    started = time.monotonic()
    await action()
    await seen()
    return (time.monotonic() - started) * 1000


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, *rows]:
        print(
            "  "
            + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        )


# --- 1. two users on one list -------------------------------------------------------------


async def test_two_users_see_each_others_changes_live(
    new_page: NewPage, demo_server: DemoServer
) -> None:
    alice = await new_page("alice")
    bob = await new_page("bob")
    list_pk = await create_list(alice, unique("Shared"))
    await open_list(alice, list_pk)
    await open_list(bob, list_pk)

    timings: list[tuple[str, ...]] = []

    # alice adds a todo: bob's page gets its row.
    title = unique("Buy stamps")
    pk_box: dict[str, str] = {}

    async def bob_sees_the_todo() -> None:
        pk_box["pk"] = await todo_pk(bob, title)

    ms = await timed(lambda: add_todo(alice, title), bob_sees_the_todo)
    timings.append(("add", "alice", "bob", f"{ms:.0f}"))
    pk = pk_box["pk"]
    assert await todo_pk(alice, title) == pk
    await expect(todo(alice, pk)).not_to_have_class(PENDING, timeout=CROSS_MS)
    await expect(todo(bob, pk)).not_to_have_class(PENDING)
    assert demo_server.sql("select title, completed from todos_todo where id = ?", [db_pk(pk)]) == [
        (title, 0)
    ]

    # bob ticks it off: alice's checkbox follows.
    ms = await timed(
        lambda: todo(bob, pk).locator("input.toggle").click(),
        lambda: alice.wait_for_function(
            """(pk) => {
              const li = document.querySelector(`#todos li.todo[data-pk="${pk}"]`);
              return li && li.classList.contains('done')
                && li.querySelector('input.toggle').checked;
            }""",
            arg=pk,
            timeout=CROSS_MS,
        ),
    )
    timings.append(("toggle", "bob", "alice", f"{ms:.0f}"))
    await expect(todo(alice, pk).locator("input.toggle")).to_be_checked()
    await expect(todo(alice, pk)).to_have_class(DONE)

    # alice edits the title: bob's input shows the new one.
    renamed = unique("Buy stamps and envelopes")

    async def edit_title() -> None:
        field = todo(alice, pk).locator("input.title")
        await field.click()
        await field.fill(renamed)
        await field.press("Enter")

    ms = await timed(
        edit_title,
        lambda: bob.wait_for_function(
            """([pk, title]) => document.querySelector(
                 `#todos li.todo[data-pk="${pk}"] input.title`)?.value === title""",
            arg=[pk, renamed],
            timeout=CROSS_MS,
        ),
    )
    timings.append(("title edit", "alice", "bob", f"{ms:.0f}"))
    await expect(todo(bob, pk).locator("input.title")).to_have_value(renamed)
    await expect(todo(alice, pk)).not_to_have_class(PENDING, timeout=CROSS_MS)

    # bob deletes it: alice's row goes.
    ms = await timed(
        lambda: todo(bob, pk).locator("button.delete").click(),
        lambda: alice.wait_for_function(
            '(pk) => !document.querySelector(`#todos li.todo[data-pk="${pk}"]`)',
            arg=pk,
            timeout=CROSS_MS,
        ),
    )
    timings.append(("delete", "bob", "alice", f"{ms:.0f}"))
    await expect(todo(alice, pk)).to_have_count(0)
    await expect(todo(bob, pk)).to_have_count(0)
    assert demo_server.sql("select count(*) from todos_todo where id = ?", [db_pk(pk)]) == [(0,)]

    transports = [await p.locator("#status").get_attribute("data-transport") for p in (alice, bob)]
    print_table(
        f"action -> seen on the other page (transports: alice {transports[0]}, "
        f"bob {transports[1]}; Playwright's own round trips included)",
        timings,
        ("action", "by", "seen by", "ms"),
    )


# --- 2. presence: cursor and typing -------------------------------------------------------


async def test_remote_cursor_and_typing_indicator(new_page: NewPage) -> None:
    alice = await new_page("alice")
    bob = await new_page("bob")
    list_pk = await create_list(alice, unique("Presence"))
    await open_list(alice, list_pk)
    title = unique("Water the plants")
    await add_todo(alice, title)
    pk = await todo_pk(alice, title)
    await open_list(bob, list_pk)
    await todo_pk(bob, title)

    # bob's mouse over #app becomes a cursor on alice's page (and, as his first presence
    # state, his avatar: see test_a_user_who_only_opened_the_list_is_shown_as_present).
    box = await bob.locator("#app").bounding_box()
    assert box is not None
    await bob.mouse.move(box["x"] + 40, box["y"] + 40)
    started = time.monotonic()
    await bob.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    cursor = alice.locator('#cursors div.cursor[data-user="bob"]')
    await expect(cursor).to_have_count(1, timeout=CROSS_MS)
    cursor_ms = (time.monotonic() - started) * 1000
    await expect(cursor).to_contain_text("bob")
    await expect(alice.locator('#presence span.avatar[data-user="bob"]')).to_have_count(1)
    # Nobody sees their own cursor.
    await expect(bob.locator("#cursors div.cursor")).to_have_count(0)

    # bob types in the todo's title: "bob is typing…" in that row on alice's page.
    typing = todo(alice, pk).locator('span.typing[data-user="bob"]')
    field = todo(bob, pk).locator("input.title")
    await field.click()
    started = time.monotonic()
    await field.press_sequentially(" now", delay=30)
    await expect(typing).to_have_count(1, timeout=CROSS_MS)
    typing_ms = (time.monotonic() - started) * 1000
    await expect(typing).to_contain_text("bob is typing")
    await expect(alice.locator("span.typing")).to_have_count(1)  # only in that row

    # bob leaves the field (Escape puts the title back and blurs): the indicator goes.
    started = time.monotonic()
    await field.press("Escape")
    await expect(field).not_to_be_focused()
    await expect(typing).to_have_count(0, timeout=CROSS_MS)
    blur_ms = (time.monotonic() - started) * 1000
    await expect(field).to_have_value(title)

    # bob types again and stops without leaving: it goes after the idle time (2 s).
    await field.click()
    await field.press_sequentially(" x", delay=30)
    await expect(typing).to_have_count(1, timeout=CROSS_MS)
    started = time.monotonic()
    await expect(typing).to_have_count(0, timeout=CROSS_MS)
    idle_ms = (time.monotonic() - started) * 1000
    await expect(field).to_be_focused()
    await field.press("Escape")

    # bob's pointer leaves #app: his cursor goes from alice's page.
    await bob.mouse.move(box["x"] + box["width"] / 2, 2)
    await expect(cursor).to_have_count(0, timeout=CROSS_MS)

    print_table(
        "presence on alice's page",
        [
            ("cursor appears", f"{cursor_ms:.0f}"),
            ("typing appears", f"{typing_ms:.0f}"),
            ("typing gone after blur", f"{blur_ms:.0f}"),
            ("typing gone when idle (from last seen)", f"{idle_ms:.0f}"),
        ],
        ("event", "ms"),
    )


async def test_people_who_only_opened_the_list_are_shown_and_leave(new_page: NewPage) -> None:
    """Presence without a mouse move or a key press: joining is enough to be shown."""
    alice = await new_page("alice")
    bob = await new_page("bob")
    list_pk = await create_list(alice, unique("Who is here"))
    await open_list(alice, list_pk)
    started = time.monotonic()
    await open_list(bob, list_pk)
    bob_on_alices = alice.locator('#presence span.avatar[data-user="bob"]')
    await expect(bob_on_alices).to_have_count(1, timeout=CROSS_MS)
    join_ms = (time.monotonic() - started) * 1000
    await expect(bob.locator('#presence span.avatar[data-user="alice"]')).to_have_count(
        1, timeout=CROSS_MS
    )
    await expect(alice.locator("#presence .presence-label")).to_have_text("2 here")
    await expect(alice.locator('#presence span.avatar[data-you="true"]')).to_have_attribute(
        "data-user", "alice"
    )

    # bob closes his tab: he goes from alice's page.
    started = time.monotonic()
    await bob.close()
    await expect(bob_on_alices).to_have_count(0, timeout=CROSS_MS)
    leave_ms = (time.monotonic() - started) * 1000
    await expect(alice.locator("#presence .presence-label")).to_have_text("Just you")
    print_table(
        "presence avatars on alice's page",
        [
            ("bob opens the list -> shown", f"{join_ms:.0f}"),
            ("bob closes it -> gone", f"{leave_ms:.0f}"),
        ],
        ("event", "ms"),
    )


# --- 3. a title conflict, resolved in the admin --------------------------------------------


async def test_title_conflict_is_shown_and_resolved_in_the_admin(
    new_page: NewPage, demo_server: DemoServer
) -> None:
    alice = await new_page("alice")
    bob = await new_page("bob")
    list_pk = await create_list(alice, unique("Conflicts"))
    await open_list(alice, list_pk)
    base = unique("Paint the fence")
    await add_todo(alice, base)
    pk = await todo_pk(alice, base)
    await expect(todo(alice, pk)).not_to_have_class(PENDING, timeout=CROSS_MS)
    await open_list(bob, list_pk)
    await todo_pk(bob, base)

    # bob goes offline and edits the title: it waits in his outbox, based on the version
    # both of them saw.
    bobs_title = unique("Paint the fence green")
    alices_title = unique("Paint the fence white")
    await bob.context.set_offline(True)
    await expect(bob.locator("#status")).not_to_have_attribute("data-state", "live")
    bob_field = todo(bob, pk).locator("input.title")
    await bob_field.click()
    await bob_field.fill(bobs_title)
    await bob_field.press("Enter")
    await expect(bob.locator("#status")).to_have_attribute("data-pending", "1")
    await expect(todo(bob, pk)).to_have_class(PENDING)

    # Meanwhile alice, online, edits the same title.
    alice_field = todo(alice, pk).locator("input.title")
    await alice_field.click()
    await alice_field.fill(alices_title)
    await alice_field.press("Enter")
    await expect(todo(alice, pk)).not_to_have_class(PENDING, timeout=CROSS_MS)
    assert demo_server.sql("select title from todos_todo where id = ?", [db_pk(pk)]) == [
        (alices_title,)
    ]

    # bob comes back: his edit is kept aside (manual policy) and his page says so,
    # naming both titles; it shows alice's, which the server kept.
    await bob.context.set_offline(False)
    toast = bob.locator('#toasts .toast[data-kind="conflict"]')
    await expect(toast).to_have_count(1, timeout=CROSS_MS)
    await expect(toast).to_contain_text(bobs_title)
    await expect(toast).to_contain_text(alices_title)
    await expect(bob_field).to_have_value(alices_title, timeout=CROSS_MS)
    await expect(bob.locator("#status")).to_have_attribute("data-pending", "0")
    await expect(alice_field).to_have_value(alices_title)
    await expect(alice.locator('#toasts .toast[data-kind="conflict"]')).to_have_count(0)
    rows = demo_server.sql(
        "select id, status, field, server_value, client_value from syncapp_conflict"
        " where model = 'todos.todo' and object_pk = ?",
        [pk],
    )
    assert len(rows) == 1, rows
    conflict_id, status, field, server_value, client_value = rows[0]
    assert (status, field) == ("pending", "title")
    assert (json.loads(server_value), json.loads(client_value)) == (alices_title, bobs_title)

    # The staff user takes bob's title in the admin.
    staff = await new_page("demo")
    await staff.goto("/admin/syncapp/conflict/")
    link = staff.locator("#result_list a", has_text=pk)
    await expect(link).to_have_count(1)
    await link.click()
    await expect(staff.locator(".syncapp-values")).to_contain_text(bobs_title)
    await expect(staff.locator(".syncapp-values")).to_contain_text(alices_title)
    started = time.monotonic()
    await staff.get_by_role("button", name="Take the client's value").click()
    await expect(staff.locator("body")).to_contain_text("Resolved: took the client's value")

    # Every open page shows it.
    await expect(alice_field).to_have_value(bobs_title, timeout=CROSS_MS)
    await expect(bob_field).to_have_value(bobs_title, timeout=CROSS_MS)
    resolved_ms = (time.monotonic() - started) * 1000
    staff_pk = demo_server.sql("select id from auth_user where username = 'demo'")[0][0]
    status, resolution, resolved_value, resolved_by, resolution_seq = demo_server.sql(
        "select status, resolution, resolved_value, resolved_by_id, resolution_seq"
        " from syncapp_conflict where id = ?",
        [conflict_id],
    )[0]
    assert (status, resolution, resolved_by) == ("resolved", "client", staff_pk)
    assert json.loads(resolved_value) == bobs_title
    assert resolution_seq is not None
    assert demo_server.sql("select title from todos_todo where id = ?", [db_pk(pk)]) == [
        (bobs_title,)
    ]
    print(f"\nadmin resolution -> both list pages show it: {resolved_ms:.0f} ms")


# --- 4. the htmx index ----------------------------------------------------------------------


async def test_htmx_index_renames_live_and_rolls_back_a_refused_rename(
    new_page: NewPage, demo_server: DemoServer
) -> None:
    alice = await new_page("alice")
    bob = await new_page("bob")  # on / already
    await wait_live(bob)
    await bob.evaluate("() => { window.notReloaded = true; }")
    await expect(bob.locator("#status")).to_have_attribute("data-transport", "websocket")
    # A list alice makes appears on bob's page (cloned from the sync-template).
    old_name = unique("Hobbies")
    list_pk = await create_list(alice, old_name)
    await expect(list_item(bob, old_name)).to_have_count(1, timeout=CROSS_MS)
    await expect(list_item(bob, old_name).locator("a.list-link")).to_have_attribute(
        "href", f"/lists/{list_pk}/"
    )

    patches: list[Request] = []
    alice.on("request", lambda r: patches.append(r) if r.method == "PATCH" else None)
    bobs_requests: list[str] = []

    def on_bob_request(request: Request) -> None:
        bobs_requests.append(f"{request.method} {request.url}")

    # alice renames it through the rename form; bob's page follows with no request.
    new_name = unique("Hobbies and crafts")
    item = alice.locator(f'#lists li.list-item[sync-object="todos.todolist:{list_pk}"]')
    bob_name = bob.locator(
        f'#lists li.list-item[sync-object="todos.todolist:{list_pk}"] span.list-name'
    )
    await item.locator("details.rename > summary").click()
    name_field = item.locator("form.rename-form input[name=name]")
    await expect(name_field).to_be_focused()
    await expect(name_field).to_have_value(old_name)
    await name_field.fill(new_name)
    bob.on("request", on_bob_request)
    started = time.monotonic()
    async with alice.expect_response(lambda r: r.request.method == "PATCH") as answer:
        await item.locator("form.rename-form").get_by_role("button", name="Save").click()
    await expect(bob_name).to_have_text(new_name, timeout=CROSS_MS)
    rename_ms = (time.monotonic() - started) * 1000
    bob.remove_listener("request", on_bob_request)
    assert (await answer.value).status == 200
    await expect(item.locator("span.list-name")).to_have_text(new_name)
    await expect(item).not_to_have_class(re.compile("sync-pending"))
    over_http = [
        line
        for line in bobs_requests
        if urlsplit(line.split(" ", 1)[1]).path.startswith("/sync/api/")
        or urlsplit(line.split(" ", 1)[1]).path == "/"
    ]
    assert over_http == [], bobs_requests
    assert await bob.evaluate("() => window.notReloaded === true")
    assert demo_server.sql("select name from todos_todolist where id = ?", [db_pk(list_pk)]) == [
        (new_name,)
    ]

    # A 201-character name: shown at once, refused by the server (max 200), put back,
    # and a toast says why.
    too_long = "x" * 201
    await item.locator("details.rename > summary").click()
    await expect(name_field).to_have_value(new_name)
    # The input's maxlength stops typing at 200: set the value as a script would.
    await name_field.evaluate(
        "(input, value) => { input.value = value; input.dispatchEvent(new Event('input')); }",
        too_long,
    )
    async with alice.expect_response(lambda r: r.request.method == "PATCH") as answer:
        await item.locator("form.rename-form").get_by_role("button", name="Save").click()
    refused = await answer.value
    assert refused.status == 400, await refused.text()
    toast = alice.locator('#toasts .toast[data-kind="rejected"]')
    await expect(toast).to_have_count(1, timeout=CROSS_MS)
    await expect(toast).to_contain_text("Couldn't save")
    print(f"\nrejected rename toast: {await toast.inner_text()!r}")
    await expect(item.locator("span.list-name")).to_have_text(new_name)
    await expect(bob_name).to_have_text(new_name)
    assert demo_server.sql("select name from todos_todolist where id = ?", [db_pk(list_pk)]) == [
        (new_name,)
    ]

    # Both changes carried an Idempotency-Key, one each.
    assert len(patches) == 2, [p.url for p in patches]
    keys = [await p.header_value("idempotency-key") for p in patches]
    for request, key in zip(patches, keys, strict=True):
        assert urlsplit(request.url).path == f"/sync/api/models/todos.todolist/{list_pk}/"
        assert key is not None
        uuid.UUID(key)  # a UUID, as the extension makes them
    assert keys[0] != keys[1]
    print(f"\nindex rename by alice -> bob's page: {rename_ms:.0f} ms (bob made no request)")


# --- 5. the op log page ---------------------------------------------------------------------


async def test_op_log_page_shows_new_ops_live(new_page: NewPage) -> None:
    alice = await new_page("alice")
    bob = await new_page("bob")
    list_pk = await create_list(alice, unique("Logged"))
    await open_list(alice, list_pk)
    first = unique("First thing")
    await add_todo(alice, first)
    await expect(todo(alice, await todo_pk(alice, first))).not_to_have_class(
        PENDING, timeout=CROSS_MS
    )

    await bob.goto(f"/lists/{list_pk}/log/")
    await wait_live(bob)
    rows = bob.locator("#oplog tbody#oplog-rows tr[data-seq]")
    await expect(rows).to_have_count(1)
    before = max(int(s) for s in await rows.evaluate_all("rs => rs.map(r => r.dataset.seq)"))

    second = unique("Second thing")
    started = time.monotonic()
    await add_todo(alice, second)
    fresh = bob.locator("#oplog-rows tr[data-seq]").filter(has_text=second)
    await expect(fresh).to_have_count(1, timeout=CROSS_MS)
    log_ms = (time.monotonic() - started) * 1000
    seq = int(await fresh.get_attribute("data-seq") or 0)
    assert seq > before
    await expect(fresh.locator("td.who")).to_contain_text("alice")
    await expect(fresh).to_have_attribute("data-kind", "create")
    # Newest first, and nothing was lost or doubled.
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_have_attribute("data-seq", str(seq))
    print(f"\nalice's add -> a row in bob's op log: {log_ms:.0f} ms")


async def test_htmx_create_shows_at_once_and_takes_the_real_key(
    new_page: NewPage, demo_server: DemoServer
) -> None:
    alice = await new_page("alice")
    held: list[str | bytes] = []
    routes: list[WebSocketRoute] = []
    gate = {"hold": False}

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        server.on_message(lambda m: held.append(m) if gate["hold"] else ws.send(m))
        routes.append(ws)

    await alice.context.route_web_socket("**/sync/ws/**", route)
    answer = asyncio.Event()

    async def hold_answer(request_route: Route) -> None:
        response = await request_route.fetch()
        await answer.wait()
        await request_route.fulfill(response=response)

    await alice.route("**/sync/api/models/todos.todolist/", hold_answer)
    await alice.goto("/")
    await wait_live(alice)
    gate["hold"] = True  # the op will be late: the page has only the HTTP answer
    name = unique("Optimistic")
    await alice.locator("#new-list-name").fill(name)
    await alice.locator("#new-list").get_by_role("button", name="New list").click()
    placeholder = alice.locator('#lists li.list-item[sync-object*=":pending-"]')
    await expect(placeholder).to_have_count(1)
    await expect(placeholder.locator("span.list-name")).to_have_text(name)
    await expect(placeholder).to_have_class(re.compile("sync-pending"))
    answer.set()
    item = list_item(alice, name)
    await expect(item).to_have_count(1, timeout=CROSS_MS)
    await expect(placeholder).to_have_count(0)
    # The answer names the object: the row now links and acts on the real key.
    await expect(item).not_to_have_attribute(
        "sync-object", re.compile("pending-"), timeout=CROSS_MS
    )
    (row,) = demo_server.sql("select id from todos_todolist where name = ?", (name,))
    pk = str(uuid.UUID(str(row[0])))
    await expect(item).to_have_attribute("sync-object", f"todos.todolist:{pk}")
    await expect(item.locator(f'a[href="/lists/{pk}/"]')).to_have_count(1)
    assert "pending-" not in await item.inner_html()
    # The late op finds the row already there: still one.
    gate["hold"] = False
    for message in held:
        routes[-1].send(message)
    await alice.wait_for_timeout(300)
    await expect(item).to_have_count(1)
