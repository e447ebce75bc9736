"""edged.ids: stream ids compared as numbers, the id just before another, id syntax checks.

Property tests (hypothesis) over the whole id space: ms and seq are unsigned 64-bit.
"""

from __future__ import annotations

import re
import uuid

import pytest
import redis
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from edged.ids import MAX_SEQ, id_before, id_key, id_ms, is_full_id, is_range_id, lowest

U64 = st.integers(0, 2**64 - 1)
# Mostly small numbers and the edges, where the off-by-one bugs are.
PART = st.one_of(st.integers(0, 3), st.sampled_from([9, 10, 99, 100, MAX_SEQ - 1, MAX_SEQ]), U64)
PAIRS = st.tuples(PART, PART)


def full(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def successor(key: tuple[int, int]) -> tuple[int, int]:
    ms, seq = key
    return (ms, seq + 1) if seq < MAX_SEQ else (ms + 1, 0)


# --------------------------------------------------------------------------- ordering


@given(PAIRS, PAIRS)
def test_id_key_order_is_numeric_order(a: tuple[int, int], b: tuple[int, int]) -> None:
    assert id_key(full(a)) == a
    assert (id_key(full(a)) < id_key(full(b))) == (a < b)


@given(st.lists(PAIRS, max_size=20))
def test_sorting_and_lowest_follow_numeric_order(pairs: list[tuple[int, int]]) -> None:
    ids = [full(p) for p in pairs]
    assert [id_key(i) for i in sorted(ids, key=id_key)] == sorted(pairs)
    assert lowest(ids) == (full(min(pairs)) if pairs else None)


def test_numeric_not_string_order() -> None:
    assert id_key("10-0") > id_key("9-5") and "10-0" < "9-5"
    assert id_key("9-10") > id_key("9-5")
    assert lowest(["10-0", "9-5", "9-10"]) == "9-5"


@given(PART)
def test_a_bare_millisecond_part_is_seq_zero(ms: int) -> None:
    assert id_key(str(ms)) == (ms, 0)
    assert id_ms(f"{ms}-7") == ms == id_ms(f"{ms}-7".encode())


# --------------------------------------------------------------------------- id_before


@given(PAIRS)
@example((5, 0))
@example((0, 1))
@example((1, 0))
def test_id_before_is_the_greatest_id_below(pair: tuple[int, int]) -> None:
    """For every id but 0-0: id_before(x) < x, it is a valid id, and nothing lies strictly
    between them (the id right after it is x itself)."""
    assume(pair != (0, 0))
    before = id_before(full(pair))
    assert is_full_id(before)
    key = id_key(before)
    assert key[0] >= 0 and 0 <= key[1] <= MAX_SEQ
    assert key < pair
    assert successor(key) == pair


def test_id_before_edges() -> None:
    assert id_before("5-3") == "5-2"
    assert id_before("5-0") == f"4-{2**64 - 1}"  # the previous ms, at its largest seq
    assert id_before("1-0") == f"0-{MAX_SEQ}"
    assert id_before("0-1") == "0-0"
    assert id_before("0-0") == "0-0"  # nothing is below 0-0
    assert id_before("7") == f"6-{MAX_SEQ}"  # a bare ms is <ms>-0


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=PAIRS)
@example(pair=(5, 0))
@example(pair=(1, 0))
def test_id_before_agrees_with_the_server(r: redis.Redis, pair: tuple[int, int]) -> None:
    """The server agrees: entries added with explicit ids id_before(x) and then x (XADD
    demands increasing ids) are both accepted; XRANGE with the exclusive end "(x" (which
    Redis computes as the id before x) returns id_before(x) alone, and with the exclusive
    start "(id_before(x)" returns x alone."""
    assume(pair > (0, 1))  # XADD refuses 0-0
    x = full(pair)
    before = id_before(x)
    key = f"t:ids:{uuid.uuid4().hex[:10]}"
    try:
        assert r.xadd(key, {"f": "b"}, id=before).decode() == before
        assert r.xadd(key, {"f": "x"}, id=x).decode() == x
        assert [e[0].decode() for e in r.xrange(key, "-", f"({x}")] == [before]
        assert [e[0].decode() for e in r.xrange(key, f"({before}", "+")] == [x]
    finally:
        r.delete(key)


# --------------------------------------------------------------------------- syntax


ASCII_FULL = re.compile(r"[0-9]+-[0-9]+")
ASCII_RANGE = re.compile(r"[0-9]+(?:-[0-9]+)?")


@given(PAIRS)
def test_generated_ids_are_accepted(pair: tuple[int, int]) -> None:
    assert is_full_id(full(pair))
    assert is_range_id(full(pair))
    assert is_range_id(str(pair[0]))
    assert not is_full_id(str(pair[0])), "a bare ms is a range bound, not an entry id"


@pytest.mark.parametrize("text", [
    "", "-", "5-", "-5", "5--3", "5-3-1", " 5-3", "5-3 ", "5-3\n", "5 -3", "a-b", "5-x", "0x5-1",
    "+5-1", "5-+1", "-5-1", "5.0-1", "1e3-0", "+", "$", ">", "*", "5-*", "(5-3",
])
def test_garbage_is_rejected(text: str) -> None:
    assert not is_full_id(text)
    assert not is_range_id(text)


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=12))
@example("5-3")
@example("5")
@example("5-3\n")
def test_accepts_exactly_the_ascii_id_forms(text: str) -> None:
    """Over ASCII text: accepted exactly when the text is <digits>-<digits> (full) or
    <digits> with an optional -<digits> (range)."""
    assert is_full_id(text) == bool(ASCII_FULL.fullmatch(text))
    assert is_range_id(text) == bool(ASCII_RANGE.fullmatch(text))


@pytest.mark.parametrize("text", ["\u0661-\u0662", "\u0663", "\uff11-2"])  # Arabic-Indic, fullwidth
def test_non_ascii_digits_are_not_ids(text: str) -> None:
    assert not is_full_id(text) and not is_range_id(text)
