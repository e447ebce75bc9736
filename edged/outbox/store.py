"""The outbox file: accepted entries, durable before they are answered, until Redis has them.

SQLite in WAL mode with ``synchronous=FULL``: a commit returns only once the write-ahead log is
fsynced, so an entry answered "accepted" survives a crash of the daemon or of the host. Why
SQLite and not an append-only file of our own: it gives the same one fsync per commit, plus
what a hand-made file would need code for (removing forwarded entries from the front without
rewriting the file, checksummed pages, detection of a torn or foreign file, a lock against a
second writer). The measured cost is in README.md ("Outbox").

Every method blocks (disk I/O): ``outbox.service`` calls them from one worker thread at a time.
A file that is not an outbox, is damaged (walcheck.py looks at the WAL SQLite would trim
silently), or cannot be opened raises OutboxUnusable, which stops the daemon with exit 78
before it consumes anything; an existing file is checked read-only first, and is never
replaced, emptied or moved.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from edged.errors import ConfigError
from edged.outbox.walcheck import wal_problem

FORMAT = "edged-outbox 1"
SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order accepted; never reused
    stream TEXT NOT NULL,                   -- the physical stream (the shard, when sharded)
    msgid TEXT NOT NULL,                    -- edged-msgid, also among the fields
    accepted_ms INTEGER NOT NULL,
    fields BLOB NOT NULL,                   -- msgpack map of every field, payload included
    size INTEGER NOT NULL                   -- bytes counted against max-bytes
);
"""
VACUUM_PAGES = 256  # free pages (1 MiB) past which a drained outbox shrinks its file
EXPECTED_COLUMNS = ["seq", "stream", "msgid", "accepted_ms", "fields", "size"]


class OutboxUnusable(ConfigError):
    """The outbox file cannot be used as it is; the message names it and what to do."""


class OutboxFull(Exception):
    """Taking these entries would pass max-entries or max-bytes; nothing was written."""


class Row(NamedTuple):
    """One entry about to be written."""

    stream: str
    msgid: str
    accepted_ms: int
    fields: bytes


class Stored(NamedTuple):
    """One entry read back, oldest first."""

    seq: int
    stream: str
    msgid: str
    fields: bytes


@dataclass
class Depth:
    entries: int = 0
    bytes: int = 0
    oldest_ms: int | None = None
    """When the oldest waiting entry was accepted (ms since the epoch); None when empty."""


def row_size(row: Row) -> int:
    return len(row.fields) + len(row.stream.encode())


class OutboxStore:
    """The open outbox file; one per daemon, held with an exclusive lock."""

    def __init__(self, path: Path, max_entries: int, max_bytes: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.depth = Depth()
        self.last_msgid = ""
        """The newest message id ever written to this outbox (kept in ``meta``)."""
        self._lock_fd = -1
        self._db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ opening and checks

    def open(self) -> None:
        """Open (or create) the file and check it; raises OutboxUnusable naming the problem.

        An existing file is checked before anything is written to it, on a read-only
        connection: a foreign or damaged file is refused exactly as it was found.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise self._unusable(f"cannot create its directory: {exc.strerror or exc}") from None
        self._take_lock()
        wal = self.path.with_name(self.path.name + "-wal")
        fresh = (not self.path.exists() or self.path.stat().st_size == 0) and not (
            wal.exists() and wal.stat().st_size > 0)
        try:
            if not fresh:
                self._check_existing(wal)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self.close()
            raise self._unusable(f"cannot be opened: {exc}") from None
        except OutboxUnusable:
            self.close()
            raise
        self._db = db
        try:
            self._configure(db, fresh)
            self._load_depth(db)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise self._unusable(f"is not a readable outbox ({exc})") from None
        except OutboxUnusable:
            self.close()
            raise

    def _check_existing(self, wal: Path) -> None:
        """The file is an edged outbox, undamaged, with every committed transaction of its
        write-ahead log readable."""
        main_size = self.path.stat().st_size if self.path.exists() else 0
        if main_size == 0:  # SQLite deletes the WAL of an empty database file as a stale one
            raise self._unusable(f"is empty but its write-ahead log {wal.name} holds "
                                 f"{wal.stat().st_size} bytes: the outbox's main file was lost")
        problem = wal_problem(wal)
        if problem is not None:
            raise self._unusable(f"is damaged: {problem}")
        uri = f"file:{quote(str(self.path))}?mode=ro"
        try:
            probe = sqlite3.connect(uri, uri=True)
        except sqlite3.Error as exc:
            raise self._unusable(f"cannot be opened: {exc}") from None
        try:
            self._check(probe)
        except sqlite3.DatabaseError as exc:
            raise self._unusable(f"is not a readable outbox ({exc})") from None
        finally:
            probe.close()

    def _take_lock(self) -> None:
        """A second daemon on the same outbox would forward its entries twice: refuse it."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise self._unusable(f"is in use by another daemon (lock {lock_path} is held)"
                                 ) from None
        except OSError as exc:
            raise self._unusable(f"cannot lock {lock_path}: {exc.strerror or exc}") from None

    def _configure(self, db: sqlite3.Connection, fresh: bool) -> None:
        if fresh:
            # auto_vacuum must be chosen before the first table: it lets a drained outbox give
            # its pages back to the file system (see ``remove``).
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise self._unusable(f"cannot use write-ahead logging (journal mode {mode})")
        db.execute("PRAGMA synchronous = FULL")
        if fresh:  # one transaction: a crash cannot leave a schema without its format mark
            db.executescript(f"BEGIN; {SCHEMA} INSERT INTO meta VALUES ('format', '{FORMAT}'); "
                             "COMMIT;")

    def _check(self, db: sqlite3.Connection) -> None:
        result = db.execute("PRAGMA quick_check").fetchall()
        if result != [("ok",)]:
            problems = "; ".join(str(r[0]) for r in result[:3])
            raise self._unusable(f"is damaged (quick_check: {problems})")
        try:
            found = db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
        except sqlite3.OperationalError:
            found = None
        if found is None or found[0] != FORMAT:
            raise self._unusable(f"is an SQLite file but not an edged outbox ({FORMAT!r} not "
                                 "recorded in it)")
        columns = [r[1] for r in db.execute("PRAGMA table_info(entries)")]
        if columns != EXPECTED_COLUMNS:
            raise self._unusable(f"has an unknown layout (entries columns {columns})")

    def _load_depth(self, db: sqlite3.Connection) -> None:
        count, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM entries").fetchone()
        self.depth = Depth(count, size, self._oldest_ms(db))
        row = db.execute("SELECT value FROM meta WHERE name = 'last-msgid'").fetchone()
        self.last_msgid = row[0] if row else ""

    def _unusable(self, problem: str) -> OutboxUnusable:
        return OutboxUnusable(
            f"outbox {self.path} {problem}. edged does not start on it and leaves it as it is: "
            "its entries were accepted and are not yet in Redis. Fix or move the file (and its "
            "-wal file) aside, or set [outbox] path to another file"
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # ------------------------------------------------------------------ the work

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "open() first"
        return self._db

    def fits(self, entries: int, size: int) -> str | None:
        """Why ``entries`` more entries of ``size`` bytes would not fit; None if they would."""
        if self.depth.entries + entries > self.max_entries:
            return (f"the outbox holds {self.depth.entries} entries; {entries} more would pass "
                    f"max-entries {self.max_entries}")
        if self.depth.bytes + size > self.max_bytes:
            return (f"the outbox holds {self.depth.bytes} bytes; {size} more would pass "
                    f"max-bytes {self.max_bytes}")
        return None

    def append(self, rows: list[Row]) -> None:
        """Write ``rows`` in one transaction; durable (fsynced) when this returns."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO entries (stream, msgid, accepted_ms, fields, size) "
                "VALUES (?, ?, ?, ?, ?)",
                [(r.stream, r.msgid, r.accepted_ms, r.fields, row_size(r)) for r in rows],
            )
            if rows:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('last-msgid', ?)",
                           (rows[-1].msgid,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.depth.entries += len(rows)
        self.depth.bytes += sum(row_size(r) for r in rows)
        if self.depth.oldest_ms is None and rows:
            self.depth.oldest_ms = rows[0].accepted_ms

    def oldest(self, limit: int, skip: list[str] | None = None) -> list[Stored]:
        """Up to ``limit`` entries, in the order accepted, leaving out the streams in ``skip``."""
        skip = skip or []
        where = f"WHERE stream NOT IN ({','.join('?' * len(skip))})" if skip else ""
        return [Stored(*r) for r in self.db.execute(
            f"SELECT seq, stream, msgid, fields FROM entries {where} ORDER BY seq LIMIT ?",
            (*skip, limit))]

    def remove(self, seqs: list[int]) -> None:
        """Forget entries Redis has acknowledged."""
        if not seqs:
            return
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            freed = removed = 0
            for start in range(0, len(seqs), 500):  # SQLite caps the parameters of a statement
                part = seqs[start:start + 500]
                marks = ",".join("?" * len(part))
                freed += db.execute(f"SELECT coalesce(sum(size), 0) FROM entries "
                                    f"WHERE seq IN ({marks})", part).fetchone()[0]
                removed += db.execute(f"DELETE FROM entries WHERE seq IN ({marks})",
                                      part).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        count = self.depth.entries - removed
        self.depth = Depth(count, self.depth.bytes - freed, self._oldest_ms(db))
        if count == 0 and db.execute("PRAGMA freelist_count").fetchone()[0] > VACUUM_PAGES:
            # An outage's backlog gives its space back: every free page (executescript runs the
            # pragma to the end; execute() would free one page), and the WAL file is cut short.
            # Not after every small batch: that would cost fsyncs (and flash wear) for nothing.
            db.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")

    def _oldest_ms(self, db: sqlite3.Connection) -> int | None:
        row = db.execute("SELECT accepted_ms FROM entries ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else int(row[0])
