"""Hybrid logical clocks: ordering, monotonicity, the skew clamp, the wire format."""

from __future__ import annotations

import pytest

from syncapp.clocks import MAX_COUNTER, HybridClock, Stamp, parse_wire
from syncapp.exceptions import MutationRejected


class FakeTime:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_stamp_orders_by_wall_then_counter_then_node():
    assert Stamp(1, 9, "z") < Stamp(2, 0, "a")
    assert Stamp(2, 0, "z") < Stamp(2, 1, "a")
    assert Stamp(2, 1, "a") < Stamp(2, 1, "b")


def test_stamp_encoding_round_trips_and_sorts_as_text():
    stamps = [Stamp(5, 2, "b"), Stamp(5, 10, "a"), Stamp(40, 0, "a")]
    assert [Stamp.decode(s.encode()) for s in stamps] == stamps
    assert sorted(s.encode() for s in stamps) == [s.encode() for s in sorted(stamps)]


def test_stamp_node_may_contain_colons():
    stamp = Stamp(1, 2, "user:7")
    assert Stamp.decode(stamp.encode()) == stamp


def test_clock_follows_physical_time():
    time = FakeTime(1000)
    clock = HybridClock("s", time)
    assert clock.now() == Stamp(1000, 0, "s")
    time.now = 2000
    assert clock.now() == Stamp(2000, 0, "s")


def test_clock_is_monotonic_when_physical_time_goes_back():
    time = FakeTime(1000)
    clock = HybridClock("s", time)
    first = clock.now()
    time.now = 10
    second = clock.now()
    assert second > first
    assert second == Stamp(1000, 1, "s")


def test_clock_now_after_a_stamp_from_the_future_orders_after_it():
    clock = HybridClock("s", FakeTime(1000))
    remote = Stamp(5000, 7, "zzz")
    assert clock.now(after=remote) == Stamp(5000, 8, "s")


def test_clock_observe_moves_later_stamps_past_the_remote_one():
    clock = HybridClock("s", FakeTime(1000))
    clock.observe(Stamp(3000, 2, "c"))
    assert clock.now() > Stamp(3000, 2, "c")


def test_clock_counter_overflow_moves_to_next_millisecond():
    clock = HybridClock("s", FakeTime(1000))
    clock.observe(Stamp(1000, MAX_COUNTER - 1, "c"))
    assert clock.now() == Stamp(1001, 0, "s")


def test_clamp_pulls_far_future_clocks_back_to_the_skew_limit():
    clock = HybridClock("s", FakeTime(1_000_000))
    assert clock.clamp(Stamp(9_999_999, 3, "c"), 60_000) == Stamp(1_060_000, 3, "c")


def test_clamp_keeps_clocks_within_the_skew():
    clock = HybridClock("s", FakeTime(1_000_000))
    stamp = Stamp(1_050_000, 3, "c")
    assert clock.clamp(stamp, 60_000) is stamp


def test_parse_wire_takes_the_node_from_the_client():
    assert parse_wire("1700000000000:4", "tab-1") == Stamp(1700000000000, 4, "tab-1")


@pytest.mark.parametrize(
    "text", ["", "1", "1:", ":1", "-1:0", "1.5:0", "NaN:0", "1:0:x", "9" * 16 + ":0"]
)
def test_parse_wire_rejects_malformed_clocks(text):
    with pytest.raises(MutationRejected) as info:
        parse_wire(text, "c")
    assert info.value.error_code == "invalid_clock"
