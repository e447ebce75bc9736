"""The workers: run the handler for each entry and settle what happened to it.

- returned → ack (batched, fenced: see acker.py);
- ``Retry`` or any other exception → stays pending, due again after a backoff (retry.py), until
  its last delivery; then dead-lettered;
- ``Reject``, a payload that cannot be decoded, or a delivery past ``max-deliveries`` →
  dead-lettered at once, atomically with its ack (lua/dead_letter.lua);
- lost to a peer meanwhile (ownership.py) → left alone: the peer owns it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import anyio
from redis.exceptions import RedisError

from edged.codec import decoder
from edged.consume.acker import Acker
from edged.consume.state import Item, StreamState
from edged.events import Event, Reject, Retry
from edged.handlers import HandlerCall
from edged.keys import (
    DEAD_CONSUMER,
    DEAD_FAILED_AT,
    DEAD_GROUP,
    DEAD_ID,
    DEAD_REASON,
    DEAD_STREAM,
    PAYLOAD_FIELD,
)
from edged.scripts import Scripts

log = logging.getLogger("edged.consumer")

MAX_REMEMBERED_ERRORS = 10_000  # last errors kept for dead-letter reasons; bounded memory


class Workers:
    def __init__(self, state: StreamState, handler: HandlerCall, acker: Acker,
                 scripts: Scripts) -> None:
        self._state = state
        self._handler = handler
        self._acker = acker
        self._scripts = scripts
        self._decode = decoder(state.cfg.codec)
        self._max_deliveries = state.cfg.max_deliveries

    async def run(self, index: int) -> None:
        """Worker ``index``: take entries until the queue closes."""
        s = self._state
        get = s.queue.get
        process = self._process
        running = s.running
        while True:
            # A fresh scope after each lost-lease cancellation; a grace-end cancellation comes
            # from the enclosing scope and ends the worker.
            with anyio.CancelScope() as scope:
                s.worker_scopes[index] = scope
                while True:
                    item = await get()
                    if item is None:
                        return
                    running[index] = item[0]
                    await process(item)
                    running[index] = None
            # Cancelled for a lost lease: the entry is a peer's now; this slot is free again.
            entry_id = running[index]
            running[index] = None
            if entry_id is not None:
                s.settled(entry_id)

    async def _process(self, item: Item) -> None:
        # The hot path: one call per entry, so locals over attribute lookups, no per-entry clock.
        entry_id, kv, delivery = item
        s = self._state
        if kv is None or delivery > self._max_deliveries or (s.lost and entry_id in s.lost):
            await self._not_runnable(item)
            return
        it = iter(kv)
        fields = {k.decode(): v for k, v in zip(it, it, strict=False)}
        raw = fields.get(PAYLOAD_FIELD)
        payload: Any = None
        if raw is not None:
            try:
                payload = self._decode(raw)
            except Exception as exc:  # msgspec.DecodeError, UnicodeDecodeError, ...
                await self._dead_letter(
                    entry_id, fields, f"undecodable: payload is not valid {s.cfg.codec}: {exc}"
                )
                return
        stats = s.stats
        stats.in_flight += 1
        started = perf_counter()
        event = Event(stream=s.stream, group=s.group, id=entry_id, fields=fields,
                      payload=payload, delivery=delivery)
        try:
            await self._handler(event)
        except Reject as exc:
            await self._dead_letter(entry_id, fields, f"rejected: {exc.reason}")
        except Retry as exc:
            stats.retried += 1
            await self._failed(event, f"retry requested: {exc}", exc.after)
        except anyio.get_cancelled_exc_class():
            stats.cancelled += 1
            raise
        except Exception as exc:
            stats.failed += 1
            await self._failed(event, f"{type(exc).__name__}: {exc}")
        else:
            self._acker.add(entry_id)
        finally:
            stats.in_flight -= 1
            stats.handler_seconds.observe(perf_counter() - started)

    async def _not_runnable(self, item: Item) -> None:
        """Entries settled without running the handler: lost, deleted, past their last delivery."""
        s = self._state
        entry_id, kv, _ = item
        if s.lost and entry_id in s.lost:
            s.settled(entry_id)  # a peer took it before we started: not ours to run
        elif kv is None:
            # Pending here, but deleted or trimmed from the stream: nothing to run.
            s.stats.deleted += 1
            log.warning("stream %s: pending entry %s was deleted from the stream; acking it",
                        s.stream, entry_id)
            self._acker.add(entry_id)
        else:
            it = iter(kv)
            fields = {k.decode(): v for k, v in zip(it, it, strict=False)}
            last = s.last_error.pop(entry_id, None)
            await self._dead_letter(entry_id, fields, "max-deliveries exceeded"
                                    + (f"; last error: {last}" if last else ""))

    async def _failed(self, event: Event, why: str, after: float | None = None) -> None:
        """Keep the entry pending for a later delivery, or dead-letter it after its last one."""
        s = self._state
        entry_id, delivery = event.id, event.delivery
        if delivery >= self._max_deliveries:
            await self._dead_letter(entry_id, event.fields,
                                    f"max-deliveries exceeded; last error: {why}")
            return
        delay = s.retries.delay(delivery, after)
        log.warning("stream %s: entry %s failed on delivery %d/%d (retry in %.1fs): %s",
                    s.stream, entry_id, delivery, self._max_deliveries, delay, why)
        if len(s.last_error) > MAX_REMEMBERED_ERRORS:
            s.last_error.clear()
        s.last_error[entry_id] = why
        s.retries.add(entry_id, delivery, anyio.current_time() + delay)
        s.settled(entry_id)

    async def _dead_letter(self, entry_id: str, fields: dict[str, bytes], reason: str) -> None:
        s = self._state
        dead = dict(fields)
        dead.update({
            DEAD_REASON: reason.encode(),
            DEAD_STREAM: s.stream.encode(),
            DEAD_GROUP: s.group.encode(),
            DEAD_ID: entry_id.encode(),
            DEAD_CONSUMER: s.consumer.encode(),
            DEAD_FAILED_AT: datetime.now(UTC).isoformat(timespec="milliseconds").encode(),
        })
        try:
            with anyio.CancelScope(shield=True):
                dead_id = await self._scripts.dead_letter(
                    s.stream, s.cfg.dead_letter_stream, s.group, s.consumer, entry_id, dead,
                )
        except RedisError as exc:  # also NOGROUP, OOM...: leave it pending, go on
            log.warning("stream %s: could not dead-letter %s (%s); it stays pending",
                        s.stream, entry_id, exc)
        else:
            if dead_id is None:
                s.stats.stale_acks += 1
                log.warning("stream %s: %s was claimed by another consumer before it could be "
                            "dead-lettered", s.stream, entry_id)
            else:
                s.stats.dead_lettered += 1
                log.warning("stream %s: dead-lettered %s to %s as %s: %s", s.stream, entry_id,
                            s.cfg.dead_letter_stream, dead_id, reason)
        s.settled(entry_id)
