"""Forwarding the outbox to Redis: oldest first, per stream all or nothing, removed after.

Each round reads the oldest ``batch`` entries (leaving out streams that wait on a backoff),
groups them by stream (order kept within each) and sends each stream's part as one MULTI/EXEC
of XADDs, then WAIT when ``wait-replicas`` is set (publish.add_atomically). What Redis took is
then removed from the file. Why each rule:

- all or nothing per stream: a pipeline half refused (OOM) and sent again would duplicate the
  half that went through and reorder the rest;
- a stream Redis refused (down, NOPERM, WRONGTYPE, OOM) waits on its own backoff while the other
  streams go on: one bad stream holds back only itself;
- before a stream is tried again, a cheap XLEN on it must answer: while Redis hangs (paused, or
  a network that drops packets), XADDs sent on each retry would queue up on the server and all
  run when it wakes up; the probe times out instead, so at most the batch in flight when the
  hang began is sent twice;
- WAIT answered by fewer replicas than asked: the entries are on the primary already, and
  sending them again would only add copies; they leave the outbox, counted in
  ``edged_outbox_unreplicated_total`` and logged;
- a removal that fails (disk) is retried on its own before anything new is read, so Redis does
  not get the same batch again and again.

A crash between the EXEC and the removal sends that batch again; the copies carry the same
``edged-msgid``.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edged.backoff import Backoff
from edged.config import OutboxConfig
from edged.connect.transient import TRANSIENT_ERRORS
from edged.errors import EdgedError
from edged.outbox.store import OutboxStore, Stored
from edged.publish import add_atomically

log = logging.getLogger("edged.outbox")

_fields_decoder = msgspec.msgpack.Decoder(dict[str, bytes])
REDIS_FAILURES = (*TRANSIENT_ERRORS, RedisError, EdgedError, OSError)


@dataclass
class OutboxStats:
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=lambda: {"full": 0, "closed": 0,
                                                             "write_failed": 0})
    forwarded: int = 0
    unreplicated: int = 0
    forward_errors: int = 0
    blocked: dict[str, str] = field(default_factory=dict)
    """Stream → why forwarding to it waits now."""


@dataclass
class _Blocked:
    backoff: Backoff
    until: float


class Forwarder:
    def __init__(self, store: OutboxStore, cfg: OutboxConfig, disk: anyio.CapacityLimiter,
                 stats: OutboxStats) -> None:
        self.store = store
        self.cfg = cfg
        self.stats = stats
        self._disk = disk  # one SQLite call at a time, shared with the writer
        self._stored = anyio.Event()
        self._blocked: dict[str, _Blocked] = {}
        self._unremoved: list[int] = []  # in Redis, not yet removed from the file
        self._remove_backoff = Backoff(base=0.2, cap=10.0)
        self._settling = False
        self._idle = anyio.Event()  # set once the forwarder stopped between two batches

    def wake(self) -> None:
        """New entries are in the file."""
        self._stored.set()

    async def settle(self) -> None:
        """At a stop: let the batch in flight finish (its EXEC and its removal from the file),
        so that a clean stop sends nothing twice. The caller bounds the wait."""
        self._settling = True
        self._stored.set()
        await self._idle.wait()

    async def run(self, client: Redis) -> None:
        while True:
            if self._settling and not self._unremoved:
                self._idle.set()
                await anyio.sleep_forever()
            if self._unremoved:
                await self._remove()
                continue
            self._stored = anyio.Event()  # reset before reading: a later append sets it
            now = anyio.current_time()
            skip = [s for s, b in self._blocked.items() if b.until > now]
            batch = await anyio.to_thread.run_sync(self.store.oldest, self.cfg.batch, skip,
                                                   limiter=self._disk)
            if not batch or self._settling:
                if self._settling:
                    continue
                wake = min((self._blocked[s].until for s in skip), default=None)
                with anyio.move_on_after(None if wake is None else max(0.0, wake - now)):
                    await self._stored.wait()
                continue
            await self._forward(client, batch)

    async def _remove(self) -> None:
        """Remove what Redis took; on a disk error, wait and try the removal alone again."""
        seqs = self._unremoved
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.store.remove, seqs, limiter=self._disk)
        except (sqlite3.Error, OSError) as exc:
            delay = self._remove_backoff.next_delay()
            log.error("outbox %s: cannot remove %d forwarded entries (%s); trying again in "
                      "%.1fs (they are in Redis: nothing new is sent meanwhile)",
                      self.store.path, len(seqs), exc, delay)
            await anyio.sleep(delay)
            return
        self._remove_backoff.reset()
        self._unremoved = []

    async def _forward(self, client: Redis, batch: list[Stored]) -> None:
        """Send the batch, stream by stream; what Redis took goes to ``_unremoved`` at once,
        so that a cancellation between two streams keeps it."""
        by_stream: dict[str, list[Stored]] = {}
        for entry in batch:
            by_stream.setdefault(entry.stream, []).append(entry)
        for stream, entries in by_stream.items():
            if await self._send(client, stream, entries):
                self._unremoved += [e.seq for e in entries]
                self.stats.forwarded += len(entries)

    async def _send(self, client: Redis, stream: str, entries: list[Stored]) -> bool:
        retrying = stream in self._blocked
        try:
            if retrying:  # does Redis answer on this stream at all? (see the module docstring)
                await client.xlen(stream)
            ids, acked = await add_atomically(
                client, stream, [_fields_decoder.decode(e.fields) for e in entries],
                wait_replicas=self.cfg.wait_replicas, wait_timeout=self.cfg.wait_timeout.seconds)
        except REDIS_FAILURES as exc:
            self._hold(stream, exc)
            return False
        if self.cfg.wait_replicas and acked < self.cfg.wait_replicas:
            self.stats.unreplicated += len(ids)
            log.warning("outbox: stream %s: only %d of %d replicas acknowledged %d entries "
                        "within %s (%s .. %s); they are on the primary, and leave the outbox "
                        "(sending them again would only add copies)", stream, acked,
                        self.cfg.wait_replicas, len(ids), self.cfg.wait_timeout, ids[0], ids[-1])
        if self._blocked.pop(stream, None) is not None:
            self.stats.blocked.pop(stream, None)
            log.info("outbox: stream %s takes entries again", stream)
        return True

    def _hold(self, stream: str, exc: BaseException) -> None:
        """Redis refused ``stream``'s entries: try it again after its own backoff."""
        self.stats.forward_errors += 1
        blocked = self._blocked.get(stream)
        if blocked is None:
            blocked = self._blocked[stream] = _Blocked(Backoff(base=0.2, cap=10.0), 0.0)
        delay = blocked.backoff.next_delay()
        blocked.until = anyio.current_time() + delay
        self.stats.blocked[stream] = str(exc) or type(exc).__name__
        log.warning("outbox: cannot forward to stream %s (%s); %d entries wait in the outbox, "
                    "retrying in %.1fs", stream, self.stats.blocked[stream],
                    self.store.depth.entries, delay)
