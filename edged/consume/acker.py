"""Batched, fenced acks for one stream.

Workers append finished ids. Usually the reader carries them: its next XREADGROUP goes out in
one pipeline behind a fenced ack of everything finished so far, so acking costs no round trip
of its own and Redis sees the ack before it hands out more entries. When the reader is parked
in a blocking read (an idle stream), the acker sends them itself after a couple of
milliseconds. Slots go back to the reader only once the ack is done, so no consumer ever holds
more than `concurrency` delivered-and-unacked entries of its own making.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import anyio
from redis.exceptions import RedisError

from edged.backoff import Backoff
from edged.connect.transient import TRANSIENT_ERRORS
from edged.consume.health import StreamHealth
from edged.consume.stats import StreamStats
from edged.scripts import Scripts

log = logging.getLogger("edged.ack")

MAX_ACK_BATCH = 2000
# How long finished ids may wait for the reader to carry them before the acker sends them.
CARRY_WAIT = 0.002


class Acker:
    def __init__(
        self,
        scripts: Scripts,
        stream: str,
        group: str,
        consumer: str,
        stats: StreamStats,
        on_done: Callable[[list[str]], None],
        others: int,
        health: StreamHealth | None = None,
    ) -> None:
        self._scripts = scripts
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._stats = stats
        self._on_done = on_done
        self._others = others  # bound on this consumer's other pending entries (concurrency)
        self._health = health or StreamHealth(stream, group)
        self._ids: list[str] = []  # finished; the reader or the acker may send them
        self._retry: list[str] = []  # an ack of these failed: only the acker sends them again
        self._ready = asyncio.Event()  # asyncio's: made once per batch (see state.py's _slots)
        self._signalled = False  # mirrors _ready.is_set() without a call per entry
        self._closing = False
        # Told how many finished ids wait, after each one: the reader decides when to carry them.
        self.on_finished: Callable[[int], None] = lambda waiting: None

    @property
    def pending(self) -> int:
        return len(self._ids)

    def add(self, entry_id: str) -> None:
        self._ids.append(entry_id)
        if not self._signalled:
            self._signalled = True
            self._ready.set()
        self.on_finished(len(self._ids))

    def take(self, limit: int = MAX_ACK_BATCH) -> list[str]:
        """Hand finished ids to the reader, which acks them in its next pipeline."""
        ids = self._ids[:limit]
        del self._ids[:limit]
        return ids

    def put_back(self, ids: list[str]) -> None:
        """The reader could not ack these (error): the acker retries them, with backoff."""
        self._retry.extend(ids)
        self._signalled = True
        self._ready.set()

    def args(self, ids: list[str], *, joined: bool = False) -> tuple[list[str], list[str | int]]:
        return self._scripts.fenced_ack_args(
            self._stream, self._group, self._consumer, ids, self._others, joined=joined
        )

    def settle_carried(self, sent: list[str], result: int | Exception) -> None:
        """The outcome of the fenced ack the reader carried in its pipeline."""
        if isinstance(result, Exception):
            # The read went through but these were not acked: for a moment this consumer holds
            # up to len(sent) entries over `concurrency`. The acker retries them with backoff.
            log.warning("stream %s: ack of %d entries failed (%s); retrying", self._stream,
                        len(sent), result)
            self.put_back(sent)
        else:
            if self._health.problems:
                self._health.ok("ack")
            self.settle(sent, int(result))

    def settle(self, sent: list[str], acked: int) -> None:
        """Count the outcome of a fenced ack of ``sent`` ids and hand their slots back."""
        self._stats.acked += acked
        stale = len(sent) - acked
        if stale:
            self._stats.stale_acks += stale
            log.warning(
                "stream %s: %d finished entries were no longer owned by %s and were not acked "
                "(another consumer claimed them)", self._stream, stale, self._consumer,
            )
        self._on_done(sent)

    def _failed(self, exc: Exception, backoff: Backoff) -> float:
        """An ack failed: how long to wait before the next try."""
        delay = backoff.next_delay()
        if isinstance(exc, TRANSIENT_ERRORS) or "NOGROUP" in str(exc):  # the reader recreates it
            log.warning("stream %s: ack failed (%s); retrying in %.2fs", self._stream, exc, delay)
            return delay
        # NOPERM on the script and the like: the stream is degraded (logged once per change).
        return max(delay, self._health.failed("ack", "XACK", self._stream, exc))

    def _give_up(self, why: str) -> None:
        log.warning("stream %s: %d finished entries could not be acked (%s); they stay pending "
                    "and will be delivered again", self._stream, len(self._ids) + len(self._retry),
                    why)

    def close(self) -> None:
        """Flush what is left, then end ``run``."""
        self._closing = True
        self._signalled = True
        self._ready.set()

    async def run(self, final_attempts: int = 5) -> None:
        """Send what the reader did not carry; after ``close``, flush and return.

        While closing, an ack that failed for want of Redis (down, a failover under way) is
        tried again with backoff until the clean-up deadline cancels this (shutdown.py): a
        failover often ends within it, and every entry acked then is not run twice. Other
        errors (the script refused, no group) give up after ``final_attempts``.
        """
        try:
            await self._run(final_attempts)
        except anyio.get_cancelled_exc_class():
            if self._closing and (self._ids or self._retry):
                self._give_up("the clean-up time ran out")
            raise

    async def _run(self, final_attempts: int) -> None:
        backoff = Backoff(base=0.05, cap=2.0)
        failures_while_closing = 0
        while True:
            await self._ready.wait()
            if not self._closing:
                await anyio.sleep(CARRY_WAIT)  # the reader usually takes them meanwhile
            if not self._ids and not self._retry:
                if self._closing:
                    return
                self._ready = asyncio.Event()
                self._signalled = False
                continue
            if self._retry:
                batch, self._retry = self._retry[:MAX_ACK_BATCH], self._retry[MAX_ACK_BATCH:]
            else:
                batch = self.take()
            try:
                acked = await self._scripts.fenced_ack(
                    self._stream, self._group, self._consumer, batch, self._others
                )
            except (*TRANSIENT_ERRORS, RedisError) as exc:  # keep the ids; retry with backoff
                self._retry[:0] = batch
                if self._closing and not isinstance(exc, TRANSIENT_ERRORS):
                    failures_while_closing += 1
                    if failures_while_closing >= final_attempts:
                        self._give_up(str(exc))
                        return
                await anyio.sleep(self._failed(exc, backoff))
                continue
            backoff.reset()
            if self._health.problems:
                self._health.ok("ack")
            self.settle(batch, acked)
