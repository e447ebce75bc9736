"""edged.consume.inflight.InFlight: which in-flight entries get their lease renewed at a tick."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edged.consume.inflight import InFlight
from edged.ids import id_key


def test_an_id_added_after_a_tick_is_renewed_from_the_tick_after_next() -> None:
    """Renewed at a tick: the ids already in flight at the previous tick. An id added between
    two ticks is not renewed at the first of them (it is fresh), only from the next on."""
    f = InFlight()
    assert f.tick() == []
    f.add_many(["1-0"])
    assert f.tick() == []  # added since the last tick: its idle time is still small
    f.add_many(["2-0"])
    assert f.tick() == ["1-0"]
    assert sorted(f.tick(), key=id_key) == ["1-0", "2-0"]
    assert sorted(f.tick(), key=id_key) == ["1-0", "2-0"]  # renewed at every tick from then on


def test_re_adding_an_id_starts_its_generation_again() -> None:
    f = InFlight()
    f.add_many(["1-0"])
    f.tick()
    f.add_many(["1-0"])  # fetched again (e.g. reclaimed after a hand-back)
    assert f.tick() == []
    assert f.tick() == ["1-0"]


def test_discard() -> None:
    f = InFlight()
    f.add_many(["1-0", "2-0", "3-0"])
    assert len(f) == 3 and "2-0" in f
    f.discard("2-0")
    f.discard("9-9")  # unknown: no error
    assert "2-0" not in f and len(f) == 2
    f.discard_many(["3-0", "8-8"])
    assert len(f) == 1
    f.tick()
    assert f.tick() == ["1-0"]
    f.discard("1-0")
    assert f.tick() == [] and len(f) == 0


def test_oldest_is_by_numeric_stream_order() -> None:
    f = InFlight()
    assert f.oldest() is None
    f.add_many(["10-0", "9-5", "9-10"])
    assert f.oldest() == "9-5"  # as strings, "10-0" < "9-5"
    f.discard("9-5")
    assert f.oldest() == "9-10"  # as strings, "9-10" < "9-5" would hide a bug above
    f.discard_many(["9-10"])
    assert f.oldest() == "10-0"


ids = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)).map(lambda t: f"{t[0]}-{t[1]}")


@given(st.lists(ids, min_size=1, max_size=30))
def test_oldest_is_the_numeric_minimum(entries: list[str]) -> None:
    f = InFlight()
    f.add_many(entries)
    assert f.oldest() == min(entries, key=id_key)
