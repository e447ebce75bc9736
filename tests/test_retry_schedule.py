"""edged.consume.retry.RetrySchedule: when a failed entry is due again."""

from __future__ import annotations

import math
import random

import pytest

from edged.consume.retry import RetrySchedule


@pytest.mark.parametrize(("delivery", "raw"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0),
                                               (5, 10.0), (60, 10.0)])
def test_delay_is_exponential_capped_and_jittered(
    monkeypatch: pytest.MonkeyPatch, delivery: int, raw: float
) -> None:
    """base 1 s, cap 10 s: 1, 2, 4, 8, then 10 for every later delivery; each multiplied by a
    jitter drawn from [0.8, 1.0] (checked at both ends of that range)."""
    s = RetrySchedule(base=1.0, cap=10.0)
    asked: list[tuple[float, float]] = []

    def at(end: int):  # type: ignore[no-untyped-def]
        def uniform(a: float, b: float) -> float:
            asked.append((a, b))
            return (a, b)[end]
        return uniform

    monkeypatch.setattr(random, "uniform", at(0))
    assert math.isclose(s.delay(delivery), raw * 0.8)
    monkeypatch.setattr(random, "uniform", at(1))
    assert math.isclose(s.delay(delivery), raw * 1.0)
    assert asked == [(0.8, 1.0), (0.8, 1.0)]


def test_jitter_stays_within_bounds() -> None:
    s = RetrySchedule(base=0.5, cap=3.0)
    for delivery in range(1, 8):
        raw = min(3.0, 0.5 * 2 ** (delivery - 1))
        for _ in range(50):
            assert raw * 0.8 <= s.delay(delivery) <= raw


def test_retry_after_is_honoured() -> None:
    """The handler's Retry(after=) wins over the backoff, uncapped and unjittered; a negative
    one means now."""
    s = RetrySchedule(base=1.0, cap=10.0)
    assert s.delay(3, after=2.5) == 2.5
    assert s.delay(1, after=60.0) == 60.0
    assert s.delay(9, after=0.0) == 0.0
    assert s.delay(2, after=-1.0) == 0.0


def test_pop_due_returns_only_due_entries_in_due_order() -> None:
    s = RetrySchedule(base=1.0, cap=10.0)
    s.add("3-0", delivery=1, due=30.0)
    s.add("1-0", delivery=2, due=10.0)
    s.add("2-0", delivery=3, due=20.0)
    assert len(s) == 3 and "2-0" in s
    assert s.next_due() == 10.0
    assert s.pop_due(5.0) == []
    assert s.pop_due(20.0) == [("1-0", 2), ("2-0", 3)]  # due exactly now counts
    assert s.ids() == ["3-0"] and "1-0" not in s
    assert s.pop_due(25.0) == []
    assert s.next_due() == 30.0
    assert s.pop_due(math.inf) == [("3-0", 1)]
    assert s.next_due() is None and len(s) == 0


def test_discarded_and_rescheduled_entries_leave_stale_heap_entries_ignored() -> None:
    """A discarded entry is never popped; a rescheduled one only at its new time; one
    discarded and added again at the same time is popped once."""
    s = RetrySchedule(base=1.0, cap=10.0)
    s.add("1-0", delivery=1, due=1.0)
    s.add("2-0", delivery=1, due=2.0)
    s.add("3-0", delivery=1, due=3.0)
    s.discard("1-0")
    s.discard("7-7")  # unknown: no error
    s.add("2-0", delivery=2, due=9.0)  # rescheduled later
    assert s.next_due() == 3.0
    assert s.pop_due(5.0) == [("3-0", 1)]
    assert s.next_due() == 9.0
    s.discard("2-0")
    s.add("2-0", delivery=4, due=9.0)  # same time as the stale heap entry
    assert s.pop_due(9.0) == [("2-0", 4)]
    assert s.pop_due(math.inf) == []
    assert s.next_due() is None


def test_rescheduling_earlier_is_honoured() -> None:
    s = RetrySchedule(base=1.0, cap=10.0)
    s.add("1-0", delivery=1, due=50.0)
    s.add("1-0", delivery=1, due=5.0)
    assert s.next_due() == 5.0
    assert s.pop_due(6.0) == [("1-0", 1)]
    assert s.pop_due(100.0) == [], "the stale entry at 50 came back"
