"""Hash slots and shard names are a contract with Redis Cluster and with producers written in
other languages: pinned here with known vectors, so a change of any function fails a test.
"""

from __future__ import annotations

import binascii
import zlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.sharding import (
    SLOTS,
    RoundRobin,
    crc16,
    hash_tag,
    key_slot,
    same_slot_key,
    shard_dead_letter,
    shard_for_key,
    shard_names,
)

# --------------------------------------------------------------------------- crc16 and slots


def test_crc16_known_vector() -> None:
    assert crc16(b"123456789") == 0x31C3
    assert crc16(b"") == 0


@given(st.binary(max_size=200))
def test_crc16_matches_the_c_implementation(data: bytes) -> None:
    # binascii.crc_hqx is the same CRC (XMODEM) in C: an oracle independent of our table.
    assert crc16(data) == binascii.crc_hqx(data, 0)


def test_key_slot_known_vectors() -> None:
    assert SLOTS == 16384
    assert key_slot("foo") == 12182
    assert key_slot("bar") == 5061
    assert key_slot(b"foo") == key_slot("foo")


def test_hash_tags_follow_redis_rules() -> None:
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert hash_tag("{user1000}.following") == b"user1000"
    # The first "{" and the first "}" after it are empty: the whole key is hashed.
    assert hash_tag("foo{}{bar}") is None
    assert key_slot("foo{}{bar}") == crc16(b"foo{}{bar}") % SLOTS
    # The tag starts after the first "{" and ends at the first "}".
    assert hash_tag("foo{{bar}}zap") == b"{bar"
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert hash_tag("foo{bar}{zap}") == b"bar"
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
    assert hash_tag("foo") is None
    assert hash_tag("foo{bar") is None
    assert hash_tag("foo}bar{") is None
    assert hash_tag(b"a{\xff}b") == b"\xff"


def test_key_slot_encodes_text_as_utf8() -> None:
    assert key_slot("ü") == crc16("ü".encode()) % SLOTS


# --------------------------------------------------------------------------- same_slot_key


def test_same_slot_key_cases() -> None:
    assert same_slot_key("orders", ":dead") == "{orders}:dead"
    assert same_slot_key("{orders}.eu", ":dead") == "{orders}.eu:dead"
    assert same_slot_key("a{b}c", "x") == "a{b}cx"
    for key in ("orders", "{orders}.eu", "a{b}c"):
        assert key_slot(same_slot_key(key, ":dead")) == key_slot(key)


@pytest.mark.parametrize("key", ["a{}b", "a}b{", "a{b", "a}b", "{}", ""])
def test_same_slot_key_refuses_keys_without_a_usable_tag(key: str) -> None:
    with pytest.raises(ValueError, match="explicitly"):
        same_slot_key(key, ":dead")


def test_same_slot_key_names_the_problem() -> None:
    with pytest.raises(ValueError, match="braces but no usable hash tag"):
        same_slot_key("a{}b", ":dead")


BRACE_FREE = st.text(min_size=1).filter(lambda s: "{" not in s and "}" not in s)
TAGGED = st.builds(
    lambda before, tag, after: before + "{" + tag + "}" + after,
    st.text().filter(lambda s: "{" not in s),
    st.text(min_size=1).filter(lambda s: "}" not in s),
    st.text(),
)


@given(st.one_of(BRACE_FREE, TAGGED), st.text())
def test_same_slot_key_shares_the_slot(key: str, suffix: str) -> None:
    assert key_slot(same_slot_key(key, ":dead")) == key_slot(key)
    assert key_slot(same_slot_key(key, suffix)) == key_slot(key)


# --------------------------------------------------------------------------- shard names


def _check_names(stream: str, shards: int) -> list[str]:
    names = shard_names(stream, shards)
    assert len(names) == shards
    assert len(set(names)) == shards
    for i, name in enumerate(names):
        assert name.startswith(f"{stream}:{i}:")
        assert i * SLOTS // shards <= key_slot(name) < (i + 1) * SLOTS // shards
        # The smallest suffix wins: no smaller k lands in the range.
        k = int(name.rsplit(":", 1)[1])
        for smaller in range(k):
            slot = key_slot(f"{stream}:{i}:{smaller}")
            assert not i * SLOTS // shards <= slot < (i + 1) * SLOTS // shards
    return names


@pytest.mark.parametrize("shards", [2, 3, 6, 16, 64])
def test_shard_names_land_each_in_its_slot_range(shards: int) -> None:
    _check_names("orders", shards)
    _check_names("ü-stream", shards)


def test_shard_names_at_the_limit() -> None:
    names = shard_names("telemetry", 1024)
    assert len(set(names)) == 1024
    assert [key_slot(n) // 16 for n in names] == list(range(1024))


def test_shard_names_known_vector() -> None:
    # The table of docs/sharding.md.
    names = shard_names("telemetry", 6)
    assert names == [
        "telemetry:0:10", "telemetry:1:3", "telemetry:2:13",
        "telemetry:3:3", "telemetry:4:2", "telemetry:5:1",
    ]
    assert [key_slot(n) for n in names] == [1547, 2761, 6912, 9385, 12568, 13899]


def test_shard_names_are_deterministic_and_not_shared_mutably() -> None:
    first = shard_names("orders", 6)
    first.append("spoiled")
    assert shard_names("orders", 6) == shard_names("orders", 6)
    assert "spoiled" not in shard_names("orders", 6)


def test_one_shard_keeps_the_stream_name() -> None:
    assert shard_names("orders", 1) == ["orders"]
    # An unsharded stream may have a hash tag: there is only one slot to pin.
    assert shard_names("{orders}.eu", 1) == ["{orders}.eu"]


@pytest.mark.parametrize("stream", ["{orders}", "or{ders", "or}ders"])
def test_sharded_names_refuse_braces(stream: str) -> None:
    with pytest.raises(ValueError, match="cannot contain"):
        shard_names(stream, 2)


@pytest.mark.parametrize("shards", [0, -1, 1025])
def test_shard_count_is_bounded(shards: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 1024"):
        shard_names("orders", shards)
    with pytest.raises(ValueError, match="between 1 and 1024"):
        shard_for_key("k", shards)


def test_shard_dead_letter_shares_the_shard_slot() -> None:
    assert shard_dead_letter("telemetry:0:10") == "{telemetry:0:10}:dead"
    for name in shard_names("telemetry", 6):
        assert key_slot(shard_dead_letter(name)) == key_slot(name)


# --------------------------------------------------------------------------- shard_for_key


def test_shard_for_key_vectors() -> None:
    # Literal numbers, not recomputed: producers in other languages rely on these.
    assert zlib.crc32(b"") == 0
    assert shard_for_key("", 6) == 0
    assert zlib.crc32(b"user-42") == 2097592435
    assert shard_for_key("user-42", 6) == 1
    assert shard_for_key(b"user-42", 6) == 1
    assert shard_for_key("user-42", 16) == 3
    assert shard_for_key("order:1001", 6) == 1
    assert shard_for_key("order:1001", 16) == 11
    assert shard_for_key("ü", 6) == 1
    assert shard_for_key("ü", 16) == 5
    assert zlib.crc32("ü".encode()) == 1675192789
    assert shard_for_key("anything", 1) == 0


@given(st.text(), st.integers(min_value=1, max_value=1024))
def test_shard_for_key_is_crc32_of_utf8_mod_n(key: str, shards: int) -> None:
    shard = shard_for_key(key, shards)
    assert 0 <= shard < shards
    assert shard == zlib.crc32(key.encode("utf-8")) % shards


# --------------------------------------------------------------------------- round robin


def test_round_robin_is_even() -> None:
    picks = RoundRobin()
    counts = Counter(picks.next_shard(6) for _ in range(6000))
    assert counts == dict.fromkeys(range(6), 1000)


def test_round_robin_cycles_from_its_start() -> None:
    picks = RoundRobin(start=4)
    assert [picks.next_shard(6) for _ in range(8)] == [4, 5, 0, 1, 2, 3, 4, 5]


def test_round_robin_starts_at_random_shards() -> None:
    starts = {RoundRobin().next_shard(6) for _ in range(200)}
    # 200 starts all on one shard: (1/6)**199, never in practice.
    assert len(starts) > 1
