"""The servers the browser tests talk to: the demo project under daphne (with its own
SQLite database) and a plain static file server for the JavaScript unit tests."""

from __future__ import annotations

import functools
import http.server
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.live.servers import ROOT, START_TIMEOUT, Process, daphne_command, free_port

# Environment variables that would point the demo at other services or hosts.
_DEMO_ENV_DROP = ("SYNCAPP_DB", "SYNCAPP_REDIS_URL", "DJANGO_ALLOWED_HOSTS", "DJANGO_SECRET_KEY")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http_status(url: str, timeout: float = 5.0) -> int:
    """The status of ``GET url``, redirects not followed (a 302 is an answer too)."""
    try:
        with _opener.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class DemoServer(Process):
    """``python -m daphne demo_project.asgi:application`` on a loopback port, with the
    demo's users (demo, alice, bob; password "demo") and the list "Groceries" in a SQLite
    database of its own. Its output goes to ``daphne.log`` next to the database."""

    label = "daphne"

    def __init__(self, workdir: Path) -> None:
        super().__init__("demo", free_port(), workdir / "daphne.log")
        self.workdir = workdir
        self.db_path = workdir / "demo.sqlite3"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, no trailing slash (127.0.0.1 is in ALLOWED_HOSTS)."""
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DEMO_ENV_DROP}
        env.update(
            DJANGO_SETTINGS_MODULE="demo_project.settings",
            SYNCAPP_DEMO_DB=str(self.db_path),
            DJANGO_DEBUG="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def command(self) -> list[str]:
        return daphne_command("demo_project.asgi:application", self.port)

    def manage(self, *args: str) -> None:
        """Run ``manage.py *args`` on this server's database (output into the log)."""
        with self.log.open("ab") as out:
            out.write(f"--- manage.py {' '.join(args)}\n".encode())
            out.flush()
            result = subprocess.run(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{self.tail()}")

    def setup_database(self) -> None:
        """Create the database: migrations, then ``manage.py demo``."""
        self.manage("migrate", "--noinput")
        self.manage("demo")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the port accepts connections and ``GET /`` answers below 500."""
        deadline = time.monotonic() + timeout
        super().wait_ready(timeout)
        while True:
            try:
                status = http_status(self.url + "/", timeout=max(0.5, deadline - time.monotonic()))
                if status < 500:
                    return
                problem = f"GET / answered {status}"
            except OSError as error:
                problem = f"GET / failed: {error}"
            if not self.running:
                raise RuntimeError(f"daphne exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"daphne is not ready ({problem}):\n{self.tail()}")
            time.sleep(0.1)

    def restart(self) -> None:
        """SIGTERM, wait for the exit, start again on the same port and wait until ready.
        The database (and so every user, list and op) survives; connections do not."""
        self.stop()
        self.start()

    @property
    def exit_code(self) -> int | None:
        """The exit status if the process has exited, else None (also None once stopped
        through :meth:`stop`, which forgets the process)."""
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 200) -> str:
        """The last ``lines`` lines of the output (manage.py commands and daphne)."""
        return self.tail(lines)

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of ``query`` on the demo database, on a fresh read-only connection
        (so it sees everything the server committed; writes raise)."""
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=20)
        try:
            return list(connection.execute(query, params).fetchall())
        finally:
            connection.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".json": "application/json",
        ".map": "application/json",
        ".wasm": "application/wasm",
    }

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticServer:
    """A threaded ``http.server`` serving ``directory`` (default: the repository root) on
    a free loopback port, e.g. ``{url}/tests/js/index.html``. ES modules get
    ``text/javascript``; nothing is cached."""

    def __init__(self, directory: Path = ROOT) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="static-server", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
