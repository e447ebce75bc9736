"""The daemon's outbox: accept local publishes durably; forward.py sends them to Redis.

Accepting: each publish (one request, one or more entries) waits while a writer task commits
it. The writer takes every publish waiting at that moment into one SQLite transaction (group
commit): one fsync covers many concurrent producers, and each is answered only once its entries
are on disk. A publish that would pass max-entries or max-bytes is refused whole.

Forwarding (forward.py): the oldest entries, per stream in one MULTI/EXEC, removed from the
file only after Redis took them.

Message ids increase across restarts too: the last one made is kept in the file with each
commit, and a new generator starts above it (a clock that stepped back, or a device without a
real-time clock, would otherwise make ids lower than those already sent).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
from redis.asyncio import Redis

from edged.config import OutboxConfig
from edged.keys import MSGID_FIELD, PAYLOAD_FIELD
from edged.msgid import MonotonicUlid
from edged.outbox.forward import Forwarder, OutboxStats
from edged.outbox.store import Depth, OutboxFull, OutboxStore, Row, row_size
from edged.sharding import RoundRobin, shard_for_key, shard_names
from edged.state import state_dir

log = logging.getLogger("edged.outbox")

_fields_encoder = msgspec.msgpack.Encoder()
_fields_decoder = msgspec.msgpack.Decoder(dict[str, bytes])


class OutboxClosed(Exception):
    """The daemon is not taking publishes now (starting up or draining)."""


class OutboxWriteFailed(Exception):
    """The entries could not be made durable (disk full, I/O error); none was accepted."""


@dataclass
class Accepted:
    ids: list[str]
    """The edged-msgid of each entry, in the order given."""
    streams: list[str]
    """The physical stream (shard) of each entry."""


@dataclass
class _Publish:
    entries: list[tuple[str, dict[str, bytes]]]
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Accepted | None = None
    error: Exception | None = None


def default_path() -> Path:
    return state_dir() / "outbox"


class Outbox:
    def __init__(self, cfg: OutboxConfig, shards: dict[str, int]) -> None:
        """``shards``: the shard count of each sharded logical stream the config names."""
        self.cfg = cfg
        self.path = Path(cfg.path) if cfg.path else default_path()
        self.store = OutboxStore(self.path, cfg.max_entries, cfg.max_bytes.bytes)
        self.stats = OutboxStats()
        self.accepting = False
        self._shards = shards
        self._round_robin = RoundRobin()
        self._ids = MonotonicUlid()
        self._disk = anyio.CapacityLimiter(1)  # one SQLite call at a time, off the event loop
        self._waiting: list[_Publish] = []
        self._work = anyio.Event()
        self.forwarder = Forwarder(self.store, cfg, self._disk, self.stats)

    def open(self) -> None:
        """Open and check the file (blocking; at start-up, before Redis). OutboxUnusable: 78."""
        self.store.open()
        if self.store.last_msgid:
            self._ids.start_after(self.store.last_msgid)
        depth = self.store.depth
        if depth.entries:
            log.info("outbox %s: %d entries (%d bytes) wait from before; forwarding them first",
                     self.path, depth.entries, depth.bytes)

    def close(self) -> None:
        self.store.close()

    @property
    def depth(self) -> Depth:
        return self.store.depth

    # ------------------------------------------------------------------ accepting

    async def accept(self, stream: str, payloads: list[bytes], fields: dict[str, bytes],
                     key: str | None = None) -> Accepted:
        """Make the entries durable; their message ids once they are. Raises OutboxFull,
        OutboxClosed or OutboxWriteFailed, in which case none of them was accepted."""
        if not self.accepting:
            self.stats.refused["closed"] += len(payloads)
            raise OutboxClosed("the daemon is not taking publishes now (starting or stopping)")
        why = self.store.fits(len(payloads), sum(map(len, payloads)))
        if why is not None:  # before building anything: a full outbox refuses cheaply
            self.stats.refused["full"] += len(payloads)
            raise OutboxFull(why)
        names = self._streams_for(stream, len(payloads), key)
        request = _Publish([(name, {**fields, PAYLOAD_FIELD: body})
                            for name, body in zip(names, payloads, strict=True)])
        self._waiting.append(request)
        self._work.set()
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _streams_for(self, stream: str, count: int, key: str | None) -> list[str]:
        shards = self._shards.get(stream, 1)
        if shards == 1:
            return [stream] * count
        names = shard_names(stream, shards)
        if key is not None:
            return [names[shard_for_key(key, shards)]] * count
        return [names[self._round_robin.next_shard(shards)] for _ in range(count)]

    async def run_writer(self) -> None:
        """Commit waiting publishes, many per transaction, until cancelled."""
        self.accepting = True
        try:
            while True:
                await self._work.wait()
                self._work = anyio.Event()
                waiting, self._waiting = self._waiting, []
                try:
                    with anyio.CancelScope(shield=True):  # a publish half-written is never left
                        await self._commit(waiting)
                except Exception as exc:  # a bug, not the disk: answer every publish anyway
                    log.exception("outbox: a commit failed")
                    for request in waiting:
                        if not request.done.is_set():
                            request.result = None
                            request.error = OutboxWriteFailed(f"the commit failed: {exc!r}")
                            request.done.set()
        finally:
            self.accepting = False
            for request in self._waiting:
                request.error = OutboxClosed("the daemon is stopping")
                request.done.set()

    async def _commit(self, waiting: list[_Publish]) -> None:
        rows: list[Row] = []
        taken: list[_Publish] = []
        size = 0
        now = time.time_ns() // 1_000_000
        for request in waiting:
            mine = [self._row(name, entry, now) for name, entry in request.entries]
            mine_size = sum(row_size(r) for r in mine)
            why = self.store.fits(len(rows) + len(mine), size + mine_size)
            if why is not None:
                self.stats.refused["full"] += len(mine)
                request.error = OutboxFull(why)
                continue
            rows += mine
            size += mine_size
            taken.append(request)
            request.result = Accepted([r.msgid for r in mine], [r.stream for r in mine])
        if rows:
            try:
                await anyio.to_thread.run_sync(self.store.append, rows, limiter=self._disk)
                self.stats.accepted += len(rows)
                self.forwarder.wake()
            except (sqlite3.Error, OSError) as exc:
                log.error("outbox %s: cannot write %d entries (%s); refusing them", self.path,
                          len(rows), exc)
                self.stats.refused["write_failed"] += len(rows)
                for request in taken:
                    request.result = None
                    request.error = OutboxWriteFailed(f"the outbox cannot be written: {exc}")
        for request in waiting:
            request.done.set()

    def _row(self, stream: str, entry: dict[str, bytes], now_ms: int) -> Row:
        msgid = self._ids.new()
        fields = {MSGID_FIELD: msgid.encode(), **entry}
        return Row(stream, msgid, now_ms, _fields_encoder.encode(fields))

    # ------------------------------------------------------------------ forwarding

    async def run_forwarder(self, client: Redis) -> None:
        """Forward the oldest entries to Redis until cancelled (or settled): forward.py."""
        await self.forwarder.run(client)

    async def settle(self) -> None:
        await self.forwarder.settle()


def decode_fields(data: bytes) -> dict[str, bytes]:
    """The field map of a stored entry (for tests and inspection)."""
    return _fields_decoder.decode(data)
