"""One stream, one consumer group: read, run handlers, ack, dead-letter, hand back at shutdown.

The reader first reads this consumer's own pending history (ID ``0``) so that entries left by a
previous run of this host are finished, then new entries (``>``). It asks for exactly as many
entries as there are free worker slots, so nothing waits prefetched where a peer could have run
it. Workers share the fetched batch (see workqueue.py); the acker sends fenced acks in batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from edged.acker import Acker
from edged.codec import PAYLOAD_FIELD, decoder
from edged.config import StreamConfig
from edged.connection import TRANSIENT_ERRORS, Backoff
from edged.events import Event, Reject, Retry
from edged.handlers import HandlerCall
from edged.lease import InFlight
from edged.retry import RetrySchedule
from edged.scripts import Scripts
from edged.stats import StreamStats
from edged.workqueue import WorkQueue

log = logging.getLogger("edged.consumer")

RAW_XREADGROUP = "XREADGROUP"
MAX_READ = 2000

# (entry id, flat [field, value, ...] list or None when the entry was deleted, delivery count)
Item = tuple[str, list[bytes] | None, int]
_PAYLOAD_KEY = PAYLOAD_FIELD.decode()


def use_raw_stream_replies(client: Redis) -> None:
    """Have this client return XREADGROUP replies as Redis sends them.

    redis-py turns every entry into a dict with bytes keys, which we would then convert again;
    taking the flat list saves a dict per entry on the hot path. Only this client is changed.
    """
    client.response_callbacks[RAW_XREADGROUP] = lambda response, **options: response


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def id_before(entry_id: str) -> str:
    """The stream id just before ``entry_id`` (for "deliver from this entry on")."""
    ms, seq = _id_key(entry_id)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-18446744073709551615"
    return "0-0"


class StreamConsumer:
    def __init__(
        self,
        client: Redis,
        scripts: Scripts,
        cfg: StreamConfig,
        consumer: str,
        handler: HandlerCall,
        read_block: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.stream = cfg.stream
        self.group = cfg.group
        self.consumer = consumer
        self.stats = StreamStats(cfg.stream, cfg.group)
        self.ready = anyio.Event()  # set after the first successful read
        self.connected = False
        self.last_progress = time.monotonic()
        self._client = client
        self._scripts = scripts
        self._handler = handler
        self._block_ms = max(1, int(read_block * 1000))
        self._decode = decoder(cfg.codec)
        self._max_deliveries = cfg.max_deliveries
        self._queue: WorkQueue[Item] = WorkQueue()
        self._free = cfg.concurrency
        self._slots = anyio.Event()
        self._reader_waiting = False
        self._stopping = False
        self._wakeup = anyio.Event()  # ends a retry pause early: stop, or a failover announced
        self._backoff = Backoff()  # the reader's; reset when a failover is announced
        self._grace_deadline: float | None = None
        self._work_scope: anyio.CancelScope | None = None
        self._unstarted: list[Item] = []
        # Reads ask for every free slot: under load, batch size beats overlap (measured).
        self._max_read = min(cfg.concurrency, MAX_READ)
        self._acker = Acker(
            scripts, cfg.stream, cfg.group, consumer, self.stats, self._acked,
            others=cfg.concurrency,
        )
        self._acker.wake_reader = self._wake_reader
        self._inflight = InFlight()
        self._lost_ids: set[str] = set()  # in flight here, but a peer owns them now
        self._retries = RetrySchedule(cfg.retry_backoff.seconds, cfg.retry_backoff_max.seconds)
        self._last_error: dict[str, str] = {}  # id -> why its last run here failed
        self._claim_idle_ms = cfg.claim_idle.ms
        self._next_reclaim = 0.0  # reclaim at once on start: a dead peer may have left work
        self._reclaim_cursor = "0-0"
        self._group_floor = "0"  # where a lost group is recreated; see _note_group_floor
        # Per worker: its cancel scope and the id it runs, so a lost lease cancels just that one.
        self._worker_scopes: list[anyio.CancelScope | None] = [None] * cfg.concurrency
        self._running: list[str | None] = [None] * cfg.concurrency

    # ----------------------------------------------------------------- lifecycle

    def stop(self, grace_deadline: float) -> None:
        """Stop reading and taking new entries; running handlers get until ``grace_deadline``."""
        if self._stopping:
            return
        self._stopping = True
        self._wakeup.set()
        self._grace_deadline = grace_deadline
        self._unstarted.extend(self._queue.close())
        self._slots.set()
        if self._work_scope is not None:
            self._work_scope.deadline = grace_deadline

    async def run(self) -> None:
        """Consume until stopped; returns once running work is finished, acked or handed back."""
        await self._ensure_group_until_ok()
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._acker.run)
            outer.start_soon(self._read_loop)
            leases = anyio.CancelScope()
            outer.start_soon(self._run_in, leases, self._lease_loop)
            with anyio.CancelScope() as work_scope:
                self._work_scope = work_scope
                if self._grace_deadline is not None:
                    work_scope.deadline = self._grace_deadline
                async with anyio.create_task_group() as workers:
                    for index in range(self.cfg.concurrency):
                        workers.start_soon(self._worker, index)
            leases.cancel()
            self._unstarted.extend(self._queue.close())
            await self._release(self._unstarted)
            self._unstarted = []
            # Entries waiting for a retry go back too: a peer retries them now rather than
            # after claim-idle. Their delivery count stays as it is: they did run.
            waiting = self._retries.pop_due(float("inf"))
            if waiting:
                await self._release_ids([(i, d + 1) for i, d in waiting], why="waiting to retry")
            self._acker.close()

    @staticmethod
    async def _run_in(scope: anyio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
        with scope:
            await fn()

    # ----------------------------------------------------------------- group

    async def ensure_group(self, start_id: str | None = None) -> bool:
        """Create the group (and the stream) unless it exists; True if it was created."""
        start_id = start_id or self.cfg.start_id
        try:
            await self._client.xgroup_create(self.stream, self.group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        log.info("stream %s: created group %s at %s", self.stream, self.group, start_id)
        return True

    async def _pause(self, delay: float) -> None:
        """Sleep before a retry, but wake at once when stopped or when a failover is announced."""
        if self._stopping:
            return
        self._wakeup = anyio.Event()
        with anyio.move_on_after(delay):
            await self._wakeup.wait()

    def retry_now(self) -> None:
        """A new primary was announced: stop backing off and reconnect at once."""
        self._backoff.reset()
        self._wakeup.set()

    async def _ensure_group_until_ok(self, start_id: str | None = None) -> None:
        backoff = self._backoff
        while not self._stopping:
            try:
                await self.ensure_group(start_id)
                self.connected = True
                return
            except TRANSIENT_ERRORS as exc:
                self.connected = False
                delay = backoff.next_delay()
                log.warning(
                    "stream %s: Redis unavailable (%s); retrying in %.1fs", self.stream, exc, delay
                )
                await self._pause(delay)

    # ----------------------------------------------------------------- reading

    async def _read_loop(self) -> None:
        backoff = self._backoff
        history_cursor: str | None = "0"  # None once our own pending history is read
        recovered = 0
        acker = self._acker
        while not self._stopping:
            while self._free <= 0 and not acker.pending and not self._stopping:
                self._slots = anyio.Event()
                self._reader_waiting = True
                try:
                    await self._slots.wait()
                finally:
                    self._reader_waiting = False
            if self._stopping:
                break
            if history_cursor is None and await self._timers_due():
                continue
            ids = acker.take()
            count = min(self._free + len(ids), self._max_read)
            if count <= 0:
                # Slots are all busy: just carry the acks (their slots come back with the reply).
                count = 0
            try:
                reply = await self._ack_and_read(ids, history_cursor, count)
            except TRANSIENT_ERRORS as exc:  # before ResponseError: READONLY is one
                self.connected = False
                self.stats.read_errors += 1
                delay = backoff.next_delay()
                log.warning("stream %s: read failed (%s); retrying in %.1fs", self.stream, exc, delay)
                await self._pause(delay)
                continue
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self._group_lost()
                    continue
                raise
            if not self.connected:
                log.info("stream %s: reading again", self.stream)
            self.connected = True
            backoff.reset()
            if count == 0:
                continue
            self.stats.reads += 1
            self.last_progress = time.monotonic()
            raw_entries: list[Any] = reply[0][1] if reply else []
            if history_cursor is not None:
                if not raw_entries:
                    if recovered:
                        log.info(
                            "stream %s: recovered %d entries left pending by this consumer's "
                            "previous run", self.stream, recovered,
                        )
                    history_cursor = None
                    self.ready.set()
                    continue
                history_cursor = raw_entries[-1][0].decode()
                recovered += len(raw_entries)
                items = await self._with_history_deliveries(raw_entries)
            else:
                self.ready.set()
                items = [(e[0].decode(), e[1], 1) for e in raw_entries]
            if not items:
                continue
            self._take(items)
            if self._stopping:
                # Fetched after the stop: hand them back now, while running handlers finish.
                unstarted, self._unstarted = self._unstarted, []
                await self._release(unstarted)
                break

    def _take(self, items: list[Item]) -> None:
        """Fetched entries become ours to run; after a stop they are handed back unstarted."""
        self._free -= len(items)
        self._inflight.add_many(entry_id for entry_id, _, _ in items)
        if self._stopping:
            self._unstarted.extend(items)
        else:
            self._queue.put_many(items)

    def _block_for(self) -> int:
        """BLOCK for a read: the configured one, cut short by the next reclaim or retry."""
        now = anyio.current_time()
        wake = self._next_reclaim
        due = self._retries.next_due()
        if due is not None:
            wake = min(wake, due)
        return max(1, min(self._block_ms, int((wake - now) * 1000) + 1))

    async def _timers_due(self) -> bool:
        """Hand back retries that are due and run a reclaim step if one is due; True if done."""
        now = anyio.current_time()
        did = False
        due = self._retries.pop_due(now)
        if due:
            # Hand them back with their delivery count unchanged; the XAUTOCLAIM just below
            # (or a peer's) takes them and counts the new delivery.
            await self._release_ids([(entry_id, delivery + 1) for entry_id, delivery in due],
                                    why="due for retry")
            self._next_reclaim = now
            did = True
        if now >= self._next_reclaim and self._free > 0:
            await self._reclaim_step()
            did = True
        return did

    async def _reclaim_step(self) -> None:
        """One XAUTOCLAIM step of the current pass; the pass ends when the cursor wraps."""
        count = min(self._free, self._max_read)
        try:
            cursor, entries, counts, deleted = await self._scripts.reclaim(
                self.stream, self.group, self.consumer, self._claim_idle_ms,
                self._reclaim_cursor, count,
            )
        except TRANSIENT_ERRORS as exc:
            log.warning("stream %s: reclaim failed (%s)", self.stream, exc)
            self._next_reclaim = anyio.current_time() + self.cfg.claim_interval.seconds
            return
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self._group_lost()
                return
            raise
        if deleted:
            self.stats.deleted += len(deleted)
            log.warning("stream %s: %d pending entries were deleted or trimmed from the stream "
                        "and dropped from the pending list: %s", self.stream, len(deleted),
                        " ".join(deleted[:10]))
        items: list[Item] = []
        for entry, delivery in zip(entries, counts, strict=True):
            if not entry:
                continue
            entry_id = entry[0].decode()
            if entry_id in self._inflight:
                continue  # already ours and queued or running: never run an entry twice
            self._retries.discard(entry_id)
            items.append((entry_id, entry[1] or None, delivery))
        if items:
            self.stats.reclaimed += len(items)
            log.info("stream %s: reclaimed %d idle entries (%s..%s)", self.stream, len(items),
                     items[0][0], items[-1][0])
            self._take(items)
        self._reclaim_cursor = cursor
        if cursor in ("0-0", "0"):
            self._reclaim_cursor = "0-0"
            self._next_reclaim = anyio.current_time() + self.cfg.claim_interval.seconds
            await self._note_group_floor()

    async def _note_group_floor(self) -> None:
        """Remember where the group could be recreated without skipping an unacked entry.

        That is just before the oldest pending entry of the group, or its last-delivered id
        when nothing is pending. Sampled once per reclaim pass: older is only ever safer.
        """
        try:
            summary = await self._client.xpending(self.stream, self.group)
            oldest = summary.get("min")
            if oldest:
                self._group_floor = id_before(_text(oldest))
                return
            for info in await self._client.xinfo_groups(self.stream):
                if _text(info["name"]) == self.group:
                    self._group_floor = _text(info["last-delivered-id"])
        except TRANSIENT_ERRORS:
            pass
        except ResponseError:
            pass  # the group is gone: the next read notices and recreates it

    async def _group_lost(self) -> None:
        """The group vanished under us (a failover to a replica that never had it, or a
        deletion): recreate it from the last floor we noted, not from `$`, so that nothing
        that was not acked is skipped. Entries after the floor are delivered again."""
        floor = self._group_floor
        oldest_inflight = self._inflight.oldest()
        if oldest_inflight is not None and _id_key(id_before(oldest_inflight)) < _id_key(floor):
            floor = id_before(oldest_inflight)
        self.stats.groups_recreated += 1
        log.warning("stream %s: group %s is gone (failover?); recreating it at %s so that no "
                    "unacked entry is skipped", self.stream, self.group, floor)
        await self._ensure_group_until_ok(start_id=floor)

    async def _ack_and_read(self, ids: list[str], history_cursor: str | None, count: int) -> Any:
        """One round trip: fenced-ack ``ids``, then XREADGROUP up to ``count`` entries.

        In one pipeline Redis runs the ack first, so the consumer never holds more than
        `concurrency` unacked entries even though the read asks for the acked ones' slots.
        """
        read: list[Any] = []
        if count:
            read = ["GROUP", self.group, self.consumer, "COUNT", count]
            if history_cursor is None:
                read += ["BLOCK", self._block_for(), "STREAMS", self.stream, ">"]
            else:
                read += ["STREAMS", self.stream, history_cursor]
        if not ids:
            return await self._client.execute_command(RAW_XREADGROUP, *read)
        if history_cursor is None:
            # Carrying acks: do not park them behind a blocking read of an idle stream.
            read = ["GROUP", self.group, self.consumer, "COUNT", count, "STREAMS", self.stream, ">"]
        keys, args = self._acker.args(ids)
        pipe = self._client.pipeline(transaction=False)
        pipe.execute_command("EVAL", Scripts.FENCED_ACK_SOURCE, len(keys), *keys, *args)
        if count:
            pipe.execute_command(RAW_XREADGROUP, *read)
        try:
            results = await pipe.execute(raise_on_error=False)
        except BaseException:
            self._acker.put_back(ids)  # not known to be acked: the acker retries them
            raise
        finally:
            await pipe.reset()
        acked = results[0]
        if isinstance(acked, Exception):
            # The read went through but these were not acked: for a moment this consumer holds
            # up to len(ids) entries over `concurrency`. The acker retries them with backoff.
            log.warning("stream %s: ack of %d entries failed (%s); retrying", self.stream,
                        len(ids), acked)
            self._acker.put_back(ids)
        else:
            self._acker.settle(ids, int(acked))
        if not count:
            return None
        if isinstance(results[1], Exception):
            raise results[1]
        return results[1]

    async def _with_history_deliveries(self, raw_entries: list[Any]) -> list[Item]:
        """Our own pending entries re-read: their delivery count comes from XPENDING."""
        first, last = raw_entries[0][0], raw_entries[-1][0]
        counts: dict[str, int] = {}
        try:
            rows = await self._client.xpending_range(
                self.stream, self.group, min=first, max=last, count=len(raw_entries),
                consumername=self.consumer,
            )
            counts = {_text(r["message_id"]): int(r["times_delivered"]) for r in rows}
        except TRANSIENT_ERRORS as exc:
            log.warning("stream %s: could not read delivery counts (%s)", self.stream, exc)
        items = []
        for entry_id_b, kv in raw_entries:
            entry_id = entry_id_b.decode()
            items.append((entry_id, kv, counts.get(entry_id, 2)))
        return items

    # ----------------------------------------------------------------- working

    def _give_back(self, n: int) -> None:
        self._free += n
        self._wake_reader()

    def _acked(self, ids: list[str]) -> None:
        self._inflight.discard_many(ids)
        if self._lost_ids:
            self._lost_ids.difference_update(ids)
        self._give_back(len(ids))

    def _settled(self, entry_id: str) -> None:
        """The entry's outcome here is final (dead-lettered, waiting to retry, lost)."""
        self._inflight.discard(entry_id)
        self._lost_ids.discard(entry_id)
        self._give_back(1)

    def _wake_reader(self) -> None:
        if self._reader_waiting:
            self._reader_waiting = False
            self._slots.set()

    async def _worker(self, index: int) -> None:
        get = self._queue.get
        process = self._process
        running = self._running
        while True:
            # A fresh scope after each lost-lease cancellation; a grace-end cancellation comes
            # from the enclosing scope and ends the worker.
            with anyio.CancelScope() as scope:
                self._worker_scopes[index] = scope
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
                self._settled(entry_id)

    async def _process(self, item: Item) -> None:
        # The hot path: one call per entry, so locals over attribute lookups, no per-entry clock.
        entry_id, kv, delivery = item
        if self._lost_ids and entry_id in self._lost_ids:
            self._settled(entry_id)  # a peer took it before we started: not ours to run
            return
        if kv is None:
            # Pending here, but deleted or trimmed from the stream: nothing to run.
            self.stats.deleted += 1
            log.warning("stream %s: pending entry %s was deleted from the stream; acking it",
                        self.stream, entry_id)
            self._acker.add(entry_id)
            return
        it = iter(kv)
        fields = {k.decode(): v for k, v in zip(it, it, strict=False)}
        if delivery > self._max_deliveries:
            last = self._last_error.pop(entry_id, None)
            await self._dead_letter(entry_id, fields, "max-deliveries exceeded"
                                    + (f"; last error: {last}" if last else ""))
            return
        raw = fields.get(_PAYLOAD_KEY)
        payload: Any = None
        if raw is not None:
            try:
                payload = self._decode(raw)
            except Exception as exc:  # msgspec.DecodeError, UnicodeDecodeError, ...
                await self._dead_letter(
                    entry_id, fields, f"undecodable: payload is not valid {self.cfg.codec}: {exc}"
                )
                return
        stats = self.stats
        stats.in_flight += 1
        started = perf_counter()
        try:
            await self._handler(Event(
                stream=self.stream, group=self.group, id=entry_id, fields=fields,
                payload=payload, delivery=delivery,
            ))
        except Reject as exc:
            await self._dead_letter(entry_id, fields, f"rejected: {exc.reason}")
        except Retry as exc:
            stats.retried += 1
            await self._failed(entry_id, fields, delivery, f"retry requested: {exc}", exc.after)
        except anyio.get_cancelled_exc_class():
            stats.cancelled += 1
            raise
        except Exception as exc:
            stats.failed += 1
            await self._failed(entry_id, fields, delivery, f"{type(exc).__name__}: {exc}")
        else:
            self._acker.add(entry_id)
        finally:
            stats.in_flight -= 1
            stats.handler_seconds.observe(perf_counter() - started)

    async def _failed(
        self, entry_id: str, fields: dict[str, bytes], delivery: int, why: str,
        after: float | None = None,
    ) -> None:
        """Keep the entry pending for a later delivery, or dead-letter it after its last one."""
        if delivery >= self._max_deliveries:
            await self._dead_letter(entry_id, fields, f"max-deliveries exceeded; last error: {why}")
            return
        delay = self._retries.delay(delivery, after)
        log.warning("stream %s: entry %s failed on delivery %d/%d (retry in %.1fs): %s",
                    self.stream, entry_id, delivery, self._max_deliveries, delay, why)
        if len(self._last_error) > 10_000:
            self._last_error.clear()
        self._last_error[entry_id] = why
        self._retries.add(entry_id, delivery, anyio.current_time() + delay)
        self._settled(entry_id)

    async def _dead_letter(self, entry_id: str, fields: dict[str, bytes], reason: str) -> None:
        dead = dict(fields)
        dead.update({
            "edged-reason": reason.encode(),
            "edged-stream": self.stream.encode(),
            "edged-group": self.group.encode(),
            "edged-id": entry_id.encode(),
            "edged-consumer": self.consumer.encode(),
            "edged-failed-at": datetime.now(UTC).isoformat(timespec="milliseconds").encode(),
        })
        try:
            with anyio.CancelScope(shield=True):
                dead_id = await self._scripts.dead_letter(
                    self.stream, self.cfg.dead_letter_stream, self.group, self.consumer,
                    entry_id, dead,
                )
        except RedisError as exc:  # also NOGROUP, OOM...: leave it pending, go on
            log.warning("stream %s: could not dead-letter %s (%s); it stays pending",
                        self.stream, entry_id, exc)
        else:
            if dead_id is None:
                self.stats.stale_acks += 1
                log.warning("stream %s: %s was claimed by another consumer before it could be "
                            "dead-lettered", self.stream, entry_id)
            else:
                self.stats.dead_lettered += 1
                log.warning("stream %s: dead-lettered %s to %s as %s: %s", self.stream, entry_id,
                            self.cfg.dead_letter_stream, dead_id, reason)
        self._settled(entry_id)

    async def _release(self, items: list[Item]) -> None:
        """Hand back entries fetched but never started, without counting a delivery."""
        if not items:
            return
        released = await self._release_ids(
            [(entry_id, delivery) for entry_id, _, delivery in items], why="fetched but unstarted"
        )
        self.stats.released += released
        for entry_id, _, _ in items:
            self._inflight.discard(entry_id)

    async def _release_ids(self, entries: list[tuple[str, int]], why: str) -> int:
        """Make entries we own look long idle, their delivery count set to n-1, so that the
        next XAUTOCLAIM (ours or a peer's) takes them at once; returns how many were ours."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                released = await self._scripts.fenced_release(
                    self.stream, self.group, self.consumer, entries
                )
            except RedisError as exc:  # also NOGROUP, OOM...: leave it pending, go on
                log.warning("stream %s: could not hand back %d entries (%s); they are taken "
                            "after claim-idle", self.stream, len(entries), exc)
                return 0
            log.info("stream %s: handed back %d %s entries", self.stream, released, why)
            return released
        return 0

    # ----------------------------------------------------------------- leases

    async def _lease_loop(self) -> None:
        """Runs until the workers are done (cancelled by run()): handlers finishing within the
        shutdown grace keep their leases too."""
        interval = max(0.025, self.cfg.claim_idle.seconds / 4)
        while True:
            await anyio.sleep(interval)
            ids = [i for i in self._inflight.tick() if i not in self._lost_ids]
            ids += self._retries.ids()
            if not ids:
                continue
            try:
                lost = await self._scripts.extend_leases(self.stream, self.group, self.consumer, ids)
            except RedisError as exc:  # also NOGROUP, OOM...: leave it pending, go on
                log.warning("stream %s: could not extend %d leases (%s)", self.stream, len(ids), exc)
                continue
            if lost:
                self._lost(lost)

    def _lost(self, lost: list[str]) -> None:
        """A peer holds these now: never ack them here, and stop working on them."""
        self.stats.lost_leases += len(lost)
        log.warning("stream %s: lost the lease on %d entries to another consumer (paused or slow "
                    "past claim-idle); their results will not be acked: %s",
                    self.stream, len(lost), " ".join(lost[:10]))
        lost_set = set(lost)
        for entry_id in lost:
            self._retries.discard(entry_id)
        # Still in flight here until its handler ends (or it would be fetched again by our own
        # reclaim while still running), but never renewed nor started again.
        self._lost_ids.update(i for i in lost if i in self._inflight)
        if not self.cfg.cancel_on_lost_lease:
            return
        for index, running in enumerate(self._running):
            scope = self._worker_scopes[index]
            if running in lost_set and scope is not None:
                scope.cancel()
