"""Batched, fenced acks for one stream.

Workers append finished ids; the acker sends whatever has gathered as one fenced-ack script call
as soon as the previous call returned, so acks batch themselves under load and go out at once
when idle. Slots are handed back to the reader only once their ack is done, so no consumer ever
holds more than `concurrency` delivered-and-unacked entries of its own making.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from edged.connection import TRANSIENT_ERRORS, Backoff
from edged.scripts import Scripts
from edged.stats import StreamStats

log = logging.getLogger("edged.ack")

MAX_ACK_BATCH = 2000


class Acker:
    def __init__(
        self,
        scripts: Scripts,
        stream: str,
        group: str,
        consumer: str,
        stats: StreamStats,
        on_done: Callable[[int], None],
    ) -> None:
        self._scripts = scripts
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._stats = stats
        self._on_done = on_done
        self._ids: list[str] = []
        self._ready = anyio.Event()
        self._closing = False

    def add(self, entry_id: str) -> None:
        self._ids.append(entry_id)
        if not self._ready.is_set():
            self._ready.set()

    def close(self) -> None:
        """Flush what is left, then end ``run``."""
        self._closing = True
        self._ready.set()

    async def run(self, final_attempts: int = 5) -> None:
        backoff = Backoff(base=0.05, cap=2.0)
        failures_while_closing = 0
        while True:
            await self._ready.wait()
            if not self._ids:
                if self._closing:
                    return
                self._ready = anyio.Event()
                continue
            batch = self._ids[:MAX_ACK_BATCH]
            try:
                acked = await self._scripts.fenced_ack(
                    self._stream, self._group, self._consumer, batch
                )
            except TRANSIENT_ERRORS as exc:
                if self._closing:
                    failures_while_closing += 1
                    if failures_while_closing >= final_attempts:
                        log.warning(
                            "stream %s: %d finished entries could not be acked (%s); they stay "
                            "pending and will be delivered again",
                            self._stream, len(self._ids), exc,
                        )
                        return
                delay = backoff.next_delay()
                log.warning("stream %s: ack failed (%s); retrying in %.2fs", self._stream, exc, delay)
                await anyio.sleep(delay)
                continue
            backoff.reset()
            del self._ids[: len(batch)]
            stale = len(batch) - acked
            self._stats.acked += acked
            if stale:
                self._stats.stale_acks += stale
                log.warning(
                    "stream %s: %d finished entries were no longer owned by %s and were not "
                    "acked (another consumer claimed them)",
                    self._stream, stale, self._consumer,
                )
            self._on_done(len(batch))
