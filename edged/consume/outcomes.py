"""The workers: run the handler for each entry and settle what happened to it.

- returned → ack (batched, fenced: see acker.py);
- ``Retry`` or any other exception → stays pending, due again after a backoff (retry.py), until
  its last delivery; then dead-lettered;
- ``Reject``, a payload that cannot be decoded, or a delivery past ``max-deliveries`` →
  dead-lettered at once, atomically with its ack (lua/dead_letter.lua);
- lost to a peer meanwhile (ownership.py) → left alone: the peer owns it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import anyio

from edged.codec import decoder
from edged.connect.transient import TRANSIENT_ERRORS
from edged.consume.acker import Acker
from edged.consume.state import Item, StreamState
from edged.events import Event, Reject, Retry
from edged.handlers import HandlerCall
from edged.keys import (
    DEAD_CONSUMER,
    DEAD_DELIVERIES,
    DEAD_FAILED_AT,
    DEAD_GROUP,
    DEAD_ID,
    DEAD_REASON,
    DEAD_STREAM,
    PAYLOAD_FIELD,
)
from edged.scripts import Scripts

log = logging.getLogger("edged.consumer")

MAX_REMEMBERED_NAMES = 1_000  # decoded field names of one-field entries; bounded memory
MAX_REMEMBERED_ERRORS = 10_000  # last errors kept for dead-letter reasons; bounded memory


def _cancelled_from_outside() -> bool:
    """Whether this task is being cancelled (a cancel scope: grace end, lost lease), as opposed
    to a handler letting a CancelledError of its own escape."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def malformed(kv: list[bytes]) -> str:
    """Why fields that Redis allows cannot become an Event's ``fields`` (a str-keyed dict)."""
    seen: set[bytes] = set()
    for position, name in enumerate(kv[::2]):
        try:
            name.decode()
        except UnicodeDecodeError as exc:
            return (f"malformed: field name {position + 1} ({name[:40]!r}) is not UTF-8 "
                    f"({exc.reason} at byte {exc.start})")
        if name in seen:
            return f"malformed: field name {name[:40].decode()!r} appears more than once"
        seen.add(name)
    return "malformed: fields could not be read"


class Workers:
    def __init__(self, state: StreamState, handler: HandlerCall, acker: Acker,
                 scripts: Scripts) -> None:
        self._state = state
        self._handler = handler
        self._acker = acker
        self._scripts = scripts
        self._decode = decoder(state.cfg.codec)
        self._max_deliveries = state.cfg.max_deliveries
        self._names: dict[bytes, str] = {}

    async def run(self, index: int) -> None:
        """Worker ``index``: take entries until the queue closes."""
        s = self._state
        get = s.queue.get
        process = self._process
        running = s.running
        turn = s.worker_turn
        ran = 0
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
                    ran += 1
                    if ran >= turn:
                        # A handler that never suspends would run the whole batch before the
                        # reader could carry the first acks and fetch more: give it a turn.
                        ran = 0
                        await asyncio.sleep(0)
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
        parsed = self._parse(kv)
        if isinstance(parsed, str):
            await self._dead_letter(item, parsed)
            return
        fields, payload = parsed
        stats = s.stats
        stats.in_flight += 1
        started = perf_counter()
        event = Event(stream=s.stream, group=s.group, id=entry_id, fields=fields,
                      payload=payload, delivery=delivery)
        try:
            await self._handler(event)
        except Reject as exc:
            await self._dead_letter(item, f"rejected: {exc.reason}")
        except Retry as exc:
            stats.retried += 1
            await self._failed(item, f"retry requested: {exc}", exc.after)
        except anyio.get_cancelled_exc_class() as exc:
            if not _cancelled_from_outside():  # the handler's own (a task it cancelled, awaited)
                stats.failed += 1
                await self._failed(item, f"{type(exc).__name__} raised by the handler")
                return
            stats.cancelled += 1
            why = "the shutdown grace ran out" if s.stopping else "its lease was lost"
            log.warning("stream %s: entry %s (delivery %d) cancelled while its handler ran (%s); "
                        "it stays pending: a peer or the next start delivers it again",
                        s.stream, entry_id, delivery, why)
            raise
        except (Exception, SystemExit) as exc:  # a handler's sys.exit() fails its entry only
            stats.failed += 1
            await self._failed(item, f"{type(exc).__name__}: {exc}")
        else:
            self._acker.add(entry_id)
        finally:
            stats.in_flight -= 1
            stats.handler_seconds.observe(perf_counter() - started)

    def _parse(self, kv: list[bytes]) -> tuple[dict[str, bytes], Any] | str:
        """An entry's fields and decoded payload, or why it cannot become an Event."""
        if len(kv) == 2 and (name := self._names.get(kv[0])) is not None:
            # The common entry, one field whose name was seen before: no decoding, no loop
            # (0.15 us instead of 0.7 us per entry).
            fields = {name: kv[1]}
        else:
            it = iter(kv)
            try:
                fields = {k.decode(): v for k, v in zip(it, it, strict=False)}
            except UnicodeDecodeError:
                return malformed(kv)
            if len(fields) * 2 != len(kv):  # a name given twice would lose a value
                return malformed(kv)
            if len(kv) == 2:
                if len(self._names) >= MAX_REMEMBERED_NAMES:  # names come from producers
                    self._names.clear()
                self._names[kv[0]] = next(iter(fields))
        raw = fields.get(PAYLOAD_FIELD)
        if raw is None:
            return fields, None
        try:
            return fields, self._decode(raw)
        except Exception as exc:  # msgspec.DecodeError, UnicodeDecodeError, ...
            return f"undecodable: payload is not valid {self._state.cfg.codec}: {exc}"

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
            last = s.last_error.pop(entry_id, None)
            await self._dead_letter(item, "max-deliveries exceeded"
                                    + (f"; last error: {last}" if last else ""))

    async def _failed(self, item: Item, why: str, after: float | None = None) -> None:
        """Keep the entry pending for a later delivery, or dead-letter it after its last one."""
        s = self._state
        entry_id, _, delivery = item
        if delivery >= self._max_deliveries:
            await self._dead_letter(item, f"max-deliveries exceeded; last error: {why}")
            return
        delay = s.retries.delay(delivery, after)
        log.warning("stream %s: entry %s failed on delivery %d/%d (retry in %.1fs): %s",
                    s.stream, entry_id, delivery, self._max_deliveries, delay, why)
        if len(s.last_error) > MAX_REMEMBERED_ERRORS:
            s.last_error.clear()
        s.last_error[entry_id] = why
        s.retries.add(entry_id, delivery, anyio.current_time() + delay)
        s.settled(entry_id)

    async def _dead_letter(self, item: Item, reason: str) -> None:
        """Copy the entry, every field as Redis holds it, to the dead-letter stream and ack it."""
        s = self._state
        entry_id, kv, delivery = item
        # A handler's text may hold lone surrogates (surrogateescape): the wire takes UTF-8 only.
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
        metadata = [
            (DEAD_ID, entry_id),
            (DEAD_STREAM, s.stream),
            (DEAD_GROUP, s.group),
            (DEAD_CONSUMER, s.consumer),
            # Redis's count as read with the entry (ours since: nobody else adds to it); a guess
            # of 2 only for a history page whose XPENDING failed (reader.py).
            (DEAD_DELIVERIES, str(delivery)),
            (DEAD_FAILED_AT, datetime.now(UTC).isoformat(timespec="milliseconds")),
            (DEAD_REASON, reason),
        ]
        try:
            with anyio.CancelScope(shield=True):
                dead_id = await self._scripts.dead_letter(
                    s.stream, s.cfg.dead_letter_stream, s.group, s.consumer, entry_id,
                    metadata, kv or [],
                )
        except Exception as exc:  # also NOGROUP, OOM...: leave it pending, go on
            log.warning("stream %s: could not dead-letter %s (%s); it stays pending",
                        s.stream, entry_id, exc)
            if not isinstance(exc, TRANSIENT_ERRORS) and "NOGROUP" not in str(exc):
                # Forgotten unless it recurs: a peer may dead-letter the entry meanwhile.
                cfg = s.cfg
                s.health.failed("dead-letter", "XADD", cfg.dead_letter_stream, exc,
                                expires_after=2 * (cfg.claim_idle.seconds + cfg.claim_interval.seconds))
        else:
            if s.health.problems:
                s.health.ok("dead-letter")
            if dead_id is None:
                s.stats.stale_acks += 1
                log.warning("stream %s: %s was claimed by another consumer before it could be "
                            "dead-lettered", s.stream, entry_id)
            else:
                s.stats.dead_lettered += 1
                log.warning("stream %s: dead-lettered %s to %s as %s: %s", s.stream, entry_id,
                            s.cfg.dead_letter_stream, dead_id, reason)
        s.settled(entry_id)
