"""Heartbeats: two missed pongs or two silent intervals make a connection dead."""

from __future__ import annotations

from syncapp.client.codes import CLIENT_HEARTBEAT_TIMEOUT
from syncapp.client.heartbeat import Heartbeat
from syncapp.protocol import Position
from tests.client.fake_server import FakeServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_alive_while_pongs_come_back():
    clock = Clock()
    beat = Heartbeat(1.0, clock)
    for _ in range(5):
        clock.now += 1
        assert beat.dead() is None
        beat.pinged()
        beat.received()
        beat.ponged()


def test_heartbeat_dead_after_two_missed_pongs_even_with_other_frames():
    clock = Clock()
    beat = Heartbeat(1.0, clock)
    beat.pinged()
    clock.now += 1
    beat.received()  # ops keep coming, but the server never answers the pings
    assert beat.dead() is None
    beat.pinged()
    clock.now += 1
    beat.received()
    assert beat.dead() == "2 pings without a pong"


def test_heartbeat_dead_after_two_silent_intervals():
    clock = Clock()
    beat = Heartbeat(1.0, clock)
    clock.now += 1.5
    assert beat.dead() is None
    clock.now += 1
    assert beat.dead() == "nothing received for 2.5 s"


async def test_client_pings_every_heartbeat_interval(make_client):
    async with FakeServer(heartbeat_ms=100) as server:
        await make_client(server.url).connect()
        pings = [await server.wait_frame("ping", count=n) for n in (1, 2, 3)]
        assert all(isinstance(p["ts"], int) for p in pings)
        assert len(server.conns) == 1  # answered pings keep the connection


async def test_client_reconnects_when_pongs_stop(make_client):
    async with FakeServer(heartbeat_ms=30) as server:
        client = make_client(server.url)
        await client.connect()
        handle = await client.subscribe("s")
        server.answer_pings = False
        await server.wait_frame("hello", count=2)
        assert server.conns[0].ws.close_code == CLIENT_HEARTBEAT_TIMEOUT
        resubscribe = await server.wait_frame("subscribe", conn=2)
        assert resubscribe["after"] == {"epoch": "epoch-1", "seq": 0}
        assert handle.position == Position(epoch="epoch-1", seq=0)
