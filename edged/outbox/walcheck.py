"""Is the outbox's write-ahead log whole? Checked before SQLite opens it.

SQLite reads a WAL up to its first frame whose checksum fails and silently drops that frame
and everything after it: that is how it forgets a write torn by a crash. But a torn write can
only be the last transaction, the one whose fsync never returned (and whose publish was never
answered). If a frame fails and a *later* transaction of the same WAL generation (the frame
header carries the WAL header's salts) was committed, the damage is not a torn write: entries
that were answered "accepted" would be dropped. This module finds that case, so that the
daemon refuses the file (exit 78) instead of starting without those entries.

Format (sqlite.org/fileformat.html, "WAL file format"): a 32-byte header (magic, version,
page size, checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2), then frames of a
24-byte header (page number, database size after commit or 0, salt-1, salt-2, checksum-1,
checksum-2) and one page. Checksums run cumulatively over the header's first 24 bytes, then
over each frame's first 8 header bytes and its page, in 32-bit words of the byte order the
magic's lowest bit names.
"""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = (0x377F0682, 0x377F0683)  # little- / big-endian checksums
HEADER = 32
FRAME_HEADER = 24


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def wal_problem(wal: Path) -> str | None:
    """What is wrong with ``wal`` such that committed transactions would be lost; None when
    it is whole, absent, empty, or only its last transaction is torn."""
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < HEADER:
        return None  # nothing was ever committed in it (a header is written with the 1st frame)
    magic, _version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:HEADER])
    if magic not in MAGIC:
        return f"its write-ahead log {wal.name} has no valid header (bad magic)"
    big = magic & 1 == 1
    frame_size = FRAME_HEADER + page_size
    frames = (len(data) - HEADER) // frame_size if page_size else 0
    if _checksum(data[:24], big, 0, 0) != (c1, c2):
        return f"the header of its write-ahead log {wal.name} is damaged" if frames else None
    broken_at, commits_after = _first_broken_frame(data, frames, frame_size, big, (salt1, salt2),
                                                   (c1, c2))
    if broken_at is not None and commits_after > 1:
        return (f"frame {broken_at + 1} of its write-ahead log {wal.name} is damaged and "
                f"{commits_after - 1} later committed transaction(s) follow it: SQLite would "
                "drop them, and they hold accepted entries")
    return None


def _first_broken_frame(data: bytes, frames: int, frame_size: int, big: bool,
                        salts: tuple[int, int], seed: tuple[int, int]) -> tuple[int | None, int]:
    """(index of the first frame of this generation whose checksum fails, or None; how many
    commit frames of this generation there are from it on)."""
    s0, s1 = seed
    broken_at: int | None = None
    commits_after = 0
    for n in range(frames):
        at = HEADER + n * frame_size
        page_no, db_size, f_salt1, f_salt2, f1, f2 = struct.unpack(
            ">6I", data[at:at + FRAME_HEADER])
        same_generation = (f_salt1, f_salt2) == salts
        if broken_at is not None:
            commits_after += 1 if same_generation and db_size else 0
            continue
        if not same_generation:
            break  # frames of an older generation: SQLite's WAL ends here, nothing lost
        s0, s1 = _checksum(data[at:at + 8], big, s0, s1)
        s0, s1 = _checksum(data[at + FRAME_HEADER:at + frame_size], big, s0, s1)
        if (s0, s1) != (f1, f2) or page_no == 0:
            broken_at = n
            commits_after = 1 if db_size else 0
    return broken_at, commits_after
