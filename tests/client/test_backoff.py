"""Exponential backoff with full jitter: the window, its cap, the attempt limit."""

from __future__ import annotations

import pytest

from syncapp.client import Backoff


def test_backoff_window_doubles_from_base():
    backoff = Backoff(base=0.5, cap=100, random=lambda: 0.999)
    assert [backoff.ceiling(n) for n in range(5)] == [0.5, 1, 2, 4, 8]


def test_backoff_window_is_capped():
    backoff = Backoff(base=1, cap=10)
    assert [backoff.ceiling(n) for n in (3, 4, 5, 60)] == [8, 10, 10, 10]


def test_backoff_full_jitter_spans_zero_to_the_window():
    # Full jitter: the random source scales the whole window, down to no wait at all.
    assert Backoff(base=1, cap=10, random=lambda: 0.0).delay(3) == 0.0
    assert Backoff(base=1, cap=10, random=lambda: 0.5).delay(3) == 4.0
    high = Backoff(base=1, cap=10, random=lambda: 0.999999).delay(3)
    assert 7.99 < high < 8


def test_backoff_delays_stay_in_bounds_with_the_real_random():
    backoff = Backoff(base=0.1, cap=3)
    for attempt in range(40):
        assert 0 <= backoff.delay(attempt) <= min(3, 0.1 * 2**attempt)


def test_backoff_huge_attempt_does_not_overflow():
    assert Backoff(base=1, cap=30, random=lambda: 1.0).delay(10_000) == 30


def test_backoff_exhausted_after_max_attempts():
    backoff = Backoff(max_attempts=3)
    assert [backoff.exhausted(n) for n in (0, 2, 3, 4)] == [False, False, True, True]


def test_backoff_without_max_attempts_never_gives_up():
    assert not Backoff().exhausted(10**6)


@pytest.mark.parametrize(
    "kwargs", [{"base": 0}, {"base": 2, "cap": 1}, {"max_attempts": 0}], ids=str
)
def test_backoff_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kwargs)
