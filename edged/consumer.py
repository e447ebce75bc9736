"""One stream, one consumer group: read, run handlers, ack, dead-letter, hand back at shutdown.

The reader first reads this consumer's own pending history (ID ``0``) so that entries left by a
previous run of this host are finished, then new entries (``>``). It asks for exactly as many
entries as there are free worker slots, so nothing waits prefetched where a peer could have run
it. Workers share the fetched batch (see workqueue.py); the acker sends fenced acks in batches.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from edged.acker import Acker
from edged.codec import PAYLOAD_FIELD, decoder
from edged.config import StreamConfig
from edged.connection import TRANSIENT_ERRORS, Backoff
from edged.events import Event, Reject, Retry
from edged.handlers import HandlerCall
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
        self._stop_event = anyio.Event()
        self._grace_deadline: float | None = None
        self._work_scope: anyio.CancelScope | None = None
        self._unstarted: list[Item] = []
        # Reads ask for every free slot: under load, batch size beats overlap (measured).
        self._max_read = min(cfg.concurrency, MAX_READ)
        self._acker = Acker(
            scripts, cfg.stream, cfg.group, consumer, self.stats, self._give_back,
            others=cfg.concurrency,
        )
        self._acker.wake_reader = self._wake_reader

    # ----------------------------------------------------------------- lifecycle

    def stop(self, grace_deadline: float) -> None:
        """Stop reading and taking new entries; running handlers get until ``grace_deadline``."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_event.set()
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
            with anyio.CancelScope() as work_scope:
                self._work_scope = work_scope
                if self._grace_deadline is not None:
                    work_scope.deadline = self._grace_deadline
                async with anyio.create_task_group() as workers:
                    for _ in range(self.cfg.concurrency):
                        workers.start_soon(self._worker)
            self._unstarted.extend(self._queue.close())
            await self._release(self._unstarted)
            self._unstarted = []
            self._acker.close()

    # ----------------------------------------------------------------- group

    async def ensure_group(self) -> bool:
        """Create the group (and the stream) unless it exists; True if it was created."""
        try:
            await self._client.xgroup_create(
                self.stream, self.group, id=self.cfg.start_id, mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        log.info("stream %s: created group %s at %s", self.stream, self.group, self.cfg.start_id)
        return True

    async def _pause(self, delay: float) -> None:
        """Sleep before a retry, but wake at once when stopped."""
        with anyio.move_on_after(delay):
            await self._stop_event.wait()

    async def _ensure_group_until_ok(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            try:
                await self.ensure_group()
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
        backoff = Backoff()
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
            ids = acker.take()
            count = min(self._free + len(ids), self._max_read)
            if count <= 0:
                # Slots are all busy: just carry the acks (their slots come back with the reply).
                count = 0
            try:
                reply = await self._ack_and_read(ids, history_cursor, count)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    log.warning("stream %s: group %s is gone; recreating it", self.stream, self.group)
                    await self._ensure_group_until_ok()
                    continue
                raise
            except TRANSIENT_ERRORS as exc:
                self.connected = False
                self.stats.read_errors += 1
                delay = backoff.next_delay()
                log.warning("stream %s: read failed (%s); retrying in %.1fs", self.stream, exc, delay)
                await self._pause(delay)
                continue
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
            if self._stopping:
                # Fetched after the stop: never started, so hand them back.
                self._free -= len(items)
                await self._release(items)
                break
            self._free -= len(items)
            self._queue.put_many(items)

    async def _ack_and_read(self, ids: list[str], history_cursor: str | None, count: int) -> Any:
        """One round trip: fenced-ack ``ids``, then XREADGROUP up to ``count`` entries.

        In one pipeline Redis runs the ack first, so the consumer never holds more than
        `concurrency` unacked entries even though the read asks for the acked ones' slots.
        """
        read: list[Any] = []
        if count:
            read = ["GROUP", self.group, self.consumer, "COUNT", count]
            if history_cursor is None:
                read += ["BLOCK", self._block_ms, "STREAMS", self.stream, ">"]
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
            self._acker.settle(len(ids), int(acked))
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

    def _wake_reader(self) -> None:
        if self._reader_waiting:
            self._reader_waiting = False
            self._slots.set()

    async def _worker(self) -> None:
        get = self._queue.get
        process = self._process
        while True:
            item = await get()
            if item is None:
                return
            await process(item)

    async def _process(self, item: Item) -> None:
        # The hot path: one call per entry, so locals over attribute lookups, no per-entry clock.
        entry_id, kv, delivery = item
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
            await self._dead_letter(entry_id, fields, "max-deliveries exceeded")
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
        try:
            await self._handler(Event(
                stream=self.stream, group=self.group, id=entry_id, fields=fields,
                payload=payload, delivery=delivery,
            ))
        except Reject as exc:
            await self._dead_letter(entry_id, fields, f"rejected: {exc.reason}")
        except Retry as exc:
            stats.retried += 1
            await self._failed(entry_id, fields, delivery, f"retry requested: {exc}")
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

    async def _failed(self, entry_id: str, fields: dict[str, bytes], delivery: int, why: str) -> None:
        """Leave the entry pending for a later delivery, or dead-letter it on its last one."""
        if delivery >= self.cfg.max_deliveries:
            await self._dead_letter(entry_id, fields, f"max-deliveries exceeded; last error: {why}")
            return
        log.warning("stream %s: entry %s failed on delivery %d/%d: %s",
                    self.stream, entry_id, delivery, self.cfg.max_deliveries, why)
        self._give_back(1)

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
        except TRANSIENT_ERRORS as exc:
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
        self._give_back(1)

    async def _release(self, items: list[Item]) -> None:
        """Hand back entries fetched but never started, without counting a delivery."""
        if not items:
            return
        entries = [(entry_id, delivery) for entry_id, _, delivery in items]
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                released = await self._scripts.fenced_release(
                    self.stream, self.group, self.consumer, entries
                )
            except TRANSIENT_ERRORS as exc:
                log.warning("stream %s: could not release %d entries (%s); peers take them "
                            "after claim-idle", self.stream, len(entries), exc)
                return
            self.stats.released += released
            log.info("stream %s: released %d fetched but unstarted entries", self.stream, released)
