"""Message ids: ULIDs, unique and ordered by the time they were made.

A ULID is 48 bits of milliseconds since the epoch and 80 random bits, written as 26 characters
of Crockford's base 32, so that ids sort as text in the order they were made. Ids made in the
same millisecond by one generator increase by one in their random part (the "monotonic" variant
of the ULID spec), so one outbox's ids are strictly increasing in the order entries were
accepted, even thousands per millisecond.
"""

from __future__ import annotations

import os
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1


def encode(value: int) -> str:
    """A 128-bit number as 26 characters of Crockford base 32."""
    chars = []
    for _ in range(26):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def timestamp_ms(ulid: str) -> int:
    """The milliseconds since the epoch at which ``ulid`` was made."""
    value = 0
    for char in ulid[:10]:
        value = value * 32 + ALPHABET.index(char)
    return value


class MonotonicUlid:
    """Makes strictly increasing ULIDs, even within a millisecond or if the clock steps back."""

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0

    def start_after(self, ulid: str) -> None:
        """Make every later id greater than ``ulid`` (one made by an earlier run)."""
        value = 0
        for char in ulid:
            value = value * 32 + ALPHABET.index(char)
        ms, random_part = value >> _RANDOM_BITS, value & _RANDOM_MAX
        if (ms, random_part) > (self._last_ms, self._last_random):
            self._last_ms, self._last_random = ms, random_part

    def new(self) -> str:
        now = time.time_ns() // 1_000_000
        if now > self._last_ms:
            self._last_ms = now
            self._last_random = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
        else:  # same millisecond, or the clock went back: count up from the last id
            self._last_random += 1
            if self._last_random > _RANDOM_MAX:  # 2^79 ids in one millisecond: move on by one
                self._last_ms += 1
                self._last_random = 0
        return encode((self._last_ms << _RANDOM_BITS) | self._last_random)
