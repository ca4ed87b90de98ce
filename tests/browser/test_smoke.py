"""The browser test infrastructure itself: the demo server, logging in, static files,
and restarting the server."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import pytest
from playwright.async_api import expect

from tests.browser.conftest import Login, NewPage
from tests.browser.servers import DemoServer, http_status
from tests.live.servers import ROOT

# The apps' static directories, served under /static/ by daphne in DEBUG.
STATIC_DIRS = [ROOT / "syncapp" / "static", ROOT / "demo_project" / "todos" / "static"]


def test_root_answers(demo_server: DemoServer) -> None:
    assert http_status(demo_server.url + "/") in {200, 302}
    assert http_status(demo_server.url + "/accounts/login/") == 200


def test_demo_data_is_in_the_database(demo_server: DemoServer) -> None:
    users = demo_server.sql("select username from auth_user order by username")
    assert users == [("alice",), ("bob",), ("demo",)]
    assert ("Groceries",) in demo_server.sql("select name from todos_todolist")


async def test_anonymous_visitor_is_offered_the_login(new_page: NewPage) -> None:
    page = await new_page()
    await page.goto("/")
    # The index either redirects to the login form or links to it.
    if urlsplit(page.url).path != "/accounts/login/":
        await page.locator('a[href^="/accounts/login/"]').first.click()
    await expect(page.locator('input[name="username"]')).to_be_visible()
    await expect(page.locator('input[name="password"]')).to_be_visible()


async def test_login_as_alice(new_page: NewPage, demo_server: DemoServer) -> None:
    page = await new_page("alice")
    assert page.url == demo_server.url + "/"
    cookies = {cookie["name"] for cookie in await page.context.cookies()}
    assert "sessionid" in cookies
    await expect(page.locator("body")).to_contain_text("alice")
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()


async def test_wrong_password_is_refused(new_page: NewPage, login: Login) -> None:
    page = await new_page()
    with pytest.raises(AssertionError, match="logging in as 'alice' failed"):
        await login(page, "alice", "wrong")
    assert urlsplit(page.url).path == "/accounts/login/"
    await expect(page.get_by_role("alert")).to_be_visible()


async def test_static_files_are_served(new_page: NewPage) -> None:
    files = sorted(p for d in STATIC_DIRS if d.is_dir() for p in d.rglob("*") if p.is_file())
    files = [p for p in files if p.name != ".gitkeep"]
    assert any(p.suffix == ".js" for p in files)
    page = await new_page()
    await page.goto("/")
    for path in files:
        relative = path.relative_to(next(d for d in STATIC_DIRS if d in path.parents))
        url = f"/static/{relative.as_posix()}"
        status, content_type, body = await page.evaluate(
            """async (url) => {
                const response = await fetch(url);
                return [response.status, response.headers.get("content-type"),
                        await response.text()];
            }""",
            url,
        )
        assert status == 200, url
        assert body == path.read_text(), url
        if path.suffix in {".js", ".mjs"}:
            # <script type="module"> refuses anything but a JavaScript MIME type.
            assert re.match(r"(text|application)/javascript", content_type or ""), (
                url,
                content_type,
            )


def test_restart(demo_server: DemoServer) -> None:
    assert demo_server.proc is not None
    pid, port = demo_server.proc.pid, demo_server.port
    demo_server.restart()
    assert demo_server.proc is not None
    assert demo_server.proc.pid != pid
    assert demo_server.port == port
    assert http_status(demo_server.url + "/accounts/login/") == 200


async def test_session_survives_a_restart(new_page: NewPage, demo_server: DemoServer) -> None:
    page = await new_page("bob")
    # In a thread, so that the browser's events keep flowing meanwhile.
    await asyncio.to_thread(demo_server.restart)
    await page.reload()
    assert urlsplit(page.url).path == "/"
    await expect(page.locator("body")).to_contain_text("bob")
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()
