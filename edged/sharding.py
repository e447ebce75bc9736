"""Redis Cluster hash slots and sharded logical streams, as pure functions.

One stream lives on one node of a cluster, so one hot stream caps throughput at one primary.
A *logical* stream of N shards is N physical streams whose names are chosen so their slots
spread over the cluster's default even slot split. Producers pick a shard from the entry's
key with a documented function (CRC-32), so producers in other languages agree with edged.

Nothing here talks to Redis: the names are a contract (docs/sharding.md gives test vectors),
and keeping them pure lets them be tested exhaustively and cached.
"""

from __future__ import annotations

import functools
import itertools
import random
import zlib

SLOTS = 16384
"""The number of hash slots of a Redis Cluster."""

MAX_SHARDS = 1024
"""At 1024 shards each owns a range of 16 slots; more would leave ranges too thin to find."""


def _crc16_table() -> tuple[int, ...]:
    # One entry per byte value: the CRC16-XMODEM (poly 0x1021) of that byte shifted in, so
    # the per-byte loop below does one lookup instead of eight shift-and-xor steps.
    table: list[int] = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _crc16_table()


def _crc16_update(crc: int, data: bytes) -> int:
    # Split from crc16 so shard_names can hash a name's fixed prefix once and then only the
    # digits of each candidate suffix.
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def crc16(data: bytes) -> int:
    """CRC16-XMODEM (poly 0x1021, init 0, no reflection, no final xor): Redis Cluster's CRC."""
    return _crc16_update(0, data)


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def hash_tag(key: str | bytes) -> bytes | None:
    """The bytes Redis hashes when ``key`` has a hash tag, else None.

    Redis's rule: the first ``{``, then the first ``}`` after it, with at least one byte
    between. ``foo{}{bar}`` has none (the first pair is empty), ``foo{{bar}}`` hashes ``{bar``.
    """
    data = _as_bytes(key)
    start = data.find(b"{")
    if start < 0:
        return None
    end = data.find(b"}", start + 1)
    if end <= start + 1:  # no "}" after the "{", or "{}" with nothing between
        return None
    return data[start + 1 : end]


def key_slot(key: str | bytes) -> int:
    """The cluster slot of ``key``, as CLUSTER KEYSLOT computes it (strings as UTF-8)."""
    tag = hash_tag(key)
    return crc16(_as_bytes(key) if tag is None else tag) % SLOTS


def same_slot_key(key: str, suffix: str) -> str:
    """A key derived from ``key`` that is always in the same slot (for MULTI/EXEC and scripts).

    A key with a hash tag keeps it: appending cannot move its first ``{`` or the first ``}``
    after it. A key without braces becomes its own hash tag. A key with braces but no usable
    tag (``a{}b``, ``a}b{``) cannot be wrapped safely, so the caller must name the key.
    """
    if hash_tag(key) is not None:
        return key + suffix
    if "{" not in key and "}" not in key:
        if not key:
            # "{}" is an empty tag, which Redis ignores: the result would hash as a whole key.
            raise ValueError("an empty key has no same-slot key; give the derived key explicitly")
        return "{" + key + "}" + suffix
    raise ValueError(
        f"{key!r} has braces but no usable hash tag, so no key derived from it is sure to share "
        "its slot; give the derived key explicitly"
    )


def _check_shards(shards: int) -> None:
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be between 1 and {MAX_SHARDS}, not {shards}")


@functools.lru_cache(maxsize=1024)
def _shard_names(stream: str, shards: int) -> tuple[str, ...]:
    # A tuple, so the cached value cannot be changed by a caller; shard_names copies it.
    names: list[str] = []
    for i in range(shards):
        low, high = i * SLOTS // shards, (i + 1) * SLOTS // shards
        prefix = f"{stream}:{i}:"
        state = _crc16_update(0, prefix.encode())
        # The smallest k wins, so the names depend only on (stream, shards), never on a seed.
        for k in itertools.count():
            if low <= _crc16_update(state, str(k).encode()) % SLOTS < high:
                names.append(f"{prefix}{k}")
                break
    return tuple(names)


def shard_names(stream: str, shards: int) -> list[str]:
    """The physical streams of the logical stream ``stream``, shard 0 first.

    Shard ``i`` is ``f"{stream}:{i}:{k}"`` with the smallest ``k >= 0`` whose slot lies in the
    ``i``-th of ``shards`` equal slot ranges. A cluster's default split gives each of P
    primaries an equal range, so when ``shards`` is a multiple of P each primary gets
    ``shards / P`` shards. One shard is no sharding: the stream keeps its own name.
    """
    _check_shards(shards)
    if shards == 1:
        return [stream]
    if "{" in stream or "}" in stream:
        # A hash tag in the name would pin every shard to the tag's one slot.
        raise ValueError(f"a sharded stream's name cannot contain '{{' or '}}': {stream!r}")
    return list(_shard_names(stream, shards))


def shard_dead_letter(shard_name: str) -> str:
    """The dead-letter stream of one shard: its name as a hash tag, so it shares the slot."""
    return "{" + shard_name + "}:dead"


def shard_for_key(key: str | bytes, shards: int) -> int:
    """The shard of an entry with ``key``: CRC-32 of the key's UTF-8 bytes, mod ``shards``.

    CRC-32 (IEEE 802.3, as zlib, Java's CRC32 and Go's crc32.ChecksumIEEE) rather than
    Python's hash(): it is stable across processes and languages, so every producer agrees.
    """
    _check_shards(shards)
    return zlib.crc32(_as_bytes(key)) % shards


class RoundRobin:
    """Spreads entries that have no key evenly over the shards, one shard after the other.

    It starts at a random shard: many short-lived producers that each send a few entries
    would otherwise all start on shard 0 and load it more than the others.
    """

    def __init__(self, start: int | None = None) -> None:
        # A large random start taken mod the shard count is (near) uniform for any count, and
        # itertools.count's next() is atomic under the GIL, so threads may share one instance.
        self._counter = itertools.count(random.getrandbits(32) if start is None else start)

    def next_shard(self, shards: int) -> int:
        """The next shard in ``range(shards)``."""
        _check_shards(shards)
        return next(self._counter) % shards
