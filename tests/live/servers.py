"""Server processes for the live tests: a private redis-server and daphne processes on
loopback, each with its output captured in a file."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
LOG_TAIL = 200


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def daphne_command(app: str, port: int) -> list[str]:
    """``python -m daphne`` serving ``app`` on a loopback port."""
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]


class Process:
    """A server subprocess on a loopback port, its output captured in a file."""

    label = "process"

    def __init__(self, name: str, port: int, log: Path) -> None:
        self.name = name
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process; :meth:`wait_ready` waits until it accepts connections."""
        with self.log.open("ab") as out:
            out.write(f"--- {self.label} {self.name} starting on {self.port}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not accepts(self.port):
            if not self.running:
                raise RuntimeError(f"{self.label} {self.name} exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} {self.name} did not listen:\n{self.tail()}")
            time.sleep(0.05)

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and wait for the process to be gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def mark(self) -> int:
        """A position in the output, for :meth:`wait_output`."""
        return self.log.stat().st_size if self.log.exists() else 0

    async def wait_output(self, text: str, since: int = 0, timeout: float = 10.0) -> None:
        """Return once ``text`` appears in the output after ``since``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self.log.open("rb") as out:
                out.seek(since)
                if text.encode() in out.read():
                    return
            if loop.time() > deadline:
                raise AssertionError(f"{self.name} did not say {text!r}:\n{self.tail()}")
            await asyncio.sleep(0.05)

    def tail(self, lines: int = LOG_TAIL) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Redis(Process):
    """A private redis-server: no persistence, so a restart forgets everything."""

    label = "redis-server"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        assert binary is not None
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Daphne(Process):
    """``python -m daphne`` serving tests.asgi with tests.live_settings."""

    label = "daphne"

    def __init__(self, name: str, port: int, log: Path, env: dict[str, str]) -> None:
        super().__init__(name, port, log)
        self.env = env

    def command(self) -> list[str]:
        return daphne_command("tests.asgi:application", self.port)

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "DJANGO_SETTINGS_MODULE": "tests.live_settings",
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Uvicorn(Daphne):
    """``python -m uvicorn`` serving tests.asgi with tests.live_settings, on uvicorn's
    default WebSocket protocol (websockets' sans-I/O one)."""

    label = "uvicorn"
    ws = "websockets-sansio"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "tests.asgi:application", "--host", "127.0.0.1",
            "--port", str(self.port), "--lifespan", "off", "--ws", self.ws,
        ]  # fmt: skip


class UvicornLegacy(Uvicorn):
    """uvicorn on websockets' legacy protocol (``--ws websockets``)."""

    ws = "websockets"


class Cluster:
    """One module's private Redis and daphne processes, started on demand."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis = Redis("redis", free_port(), workdir / "redis.log")
        self.daphnes: dict[str, Daphne] = {}
        self.db_name = ""

    def servers(self, *names: str, kind: type[Daphne] = Daphne) -> list[Daphne]:
        """The server processes ``names`` (daphne unless ``kind`` says), each started (in
        parallel) if it is not running."""
        if not self.redis.running:
            self.redis.start()
        starting = []
        for name in names:
            server = self.daphnes.get(name)
            if server is None:
                env = {
                    "SYNCAPP_LIVE_DB_NAME": self.db_name,
                    "SYNCAPP_LIVE_REDIS_URL": self.redis.url,
                }
                server = self.daphnes[name] = kind(
                    name, free_port(), self.workdir / f"{kind.label}-{name}.log", env
                )
            if not server.running:
                server.spawn()
                starting.append(server)
        for server in starting:
            server.wait_ready()
        return [self.daphnes[name] for name in names]

    def processes(self) -> list[Process]:
        return [self.redis, *self.daphnes.values()]

    def stop(self) -> None:
        """Stop the daphne processes (together), then Redis."""
        for server in self.daphnes.values():
            if server.running:
                assert server.proc is not None
                server.proc.terminate()
        for process in [*self.daphnes.values(), self.redis]:
            process.stop()
