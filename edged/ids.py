"""Stream entry ids (``<ms>-<seq>``): parsing, ordering, and the id just before another.

Ids are compared as numbers, never as strings (``"9-0" > "10-0"`` as strings).
"""

from __future__ import annotations

import re

MAX_SEQ = 2**64 - 1
FULL_ID = re.compile(r"[0-9]+-[0-9]+")
"""A complete id, as XCLAIM, XACK or XRANGE of one entry need."""
RANGE_ID = re.compile(r"[0-9]+(?:-[0-9]+)?")
"""An id or its millisecond part alone, as range bounds take."""


def id_key(entry_id: str) -> tuple[int, int]:
    """``"5-3"`` → ``(5, 3)``, the sort key of an id; a bare ``"5"`` is ``(5, 0)``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def id_ms(entry_id: str | bytes) -> int:
    """The millisecond timestamp part of an id (when Redis added the entry, by its clock)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def id_before(entry_id: str) -> str:
    """The greatest id below ``entry_id`` (for "deliver from this entry on"); ``0-0`` has none."""
    ms, seq = id_key(entry_id)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{MAX_SEQ}"
    return "0-0"


def lowest(ids: list[str]) -> str | None:
    """The smallest of ``ids`` by stream order, None if there are none."""
    return min(ids, key=id_key) if ids else None


def is_full_id(text: str) -> bool:
    return FULL_ID.fullmatch(text) is not None


def is_range_id(text: str) -> bool:
    return RANGE_ID.fullmatch(text) is not None
