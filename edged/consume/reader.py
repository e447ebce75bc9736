"""Reading one stream: this consumer's own pending history first, then new entries.

History (XREADGROUP with ID ``0``, paged) finishes what a previous run of this host left
pending; then ``>`` reads new entries with a short BLOCK. Every read asks for exactly the free
worker slots (COUNT), so nothing waits prefetched where a peer could have run it. Finished ids
ride in the same pipeline, ahead of the read: Redis runs the fenced ack first, so the slots it
frees can be filled by that very read without ever holding more than ``concurrency`` entries.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from edged.connect.transient import TRANSIENT_ERRORS
from edged.consume.acker import Acker
from edged.consume.group import GroupKeeper
from edged.consume.ownership import Ownership
from edged.consume.reclaim import Reclaimer
from edged.consume.state import Item, StreamState
from edged.consume.wire import Wire
from edged.replies import text
from edged.scripts import Scripts

log = logging.getLogger("edged.consumer")


def _now() -> float:
    """anyio.current_time() without its backend lookup (once per round trip): the asyncio
    loop's clock, which is what anyio reads on this backend."""
    return asyncio.get_running_loop().time()

RAW_XREADGROUP = "XREADGROUP"
MAX_READ = 2000


def use_raw_stream_replies(client: Redis) -> None:
    """Have this client return XREADGROUP replies as Redis sends them.

    redis-py turns every entry into a dict with bytes keys, which we would then convert again;
    taking the flat list saves a dict per entry on the hot path. Only this client is changed.
    """
    client.response_callbacks[RAW_XREADGROUP] = lambda response, **options: response


class Reader:
    def __init__(self, state: StreamState, client: Redis, acker: Acker, reclaimer: Reclaimer,
                 group: GroupKeeper, ownership: Ownership, read_block: float,
                 max_read: int) -> None:
        self._state = state
        self._client = client
        self._acker = acker
        self._reclaimer = reclaimer
        self._group = group
        self._ownership = ownership
        self._block_ms = max(1, int(read_block * 1000))
        self._max_read = max_read
        self._history: str | None = "0"  # where our own pending history continues; None once read
        self._recovered = 0
        self._idle = False  # a shard whose last read found nothing: it waits with COUNT 1
        # One server: the reader's own connection (wire.py). A cluster client routes each
        # command to its slot's node itself, through its pipeline.
        self._wire = Wire(client) if isinstance(client, Redis) else None

    async def run(self) -> None:
        """Read until stopped; entries fetched after the stop are handed back at once."""
        try:
            await self._read_until_stopped()
        finally:
            if self._wire is not None:
                with anyio.CancelScope(shield=True):
                    await self._wire.close()

    async def _read_until_stopped(self) -> None:
        s = self._state
        acker = self._acker
        while not s.stopping:
            if not s.worth_a_round_trip(acker.pending):  # no coroutine per turn otherwise
                await s.wait_for_slots(lambda: acker.pending)
            if s.stopping:
                break
            if s.paused:  # `edged pause`: read nothing, reclaim nothing; handlers finish
                await s.wait_resumed()
                continue
            # A clock read first: most turns have no reclaim or retry due, and pay no coroutine.
            if (self._history is None and self._reclaimer.wake_at() <= _now()
                    and await self._reclaimer.run_due()):
                continue
            items = await self._read_once()
            if items:
                s.take(items)
                if s.stopping:
                    # Fetched after the stop: hand them back now, while running handlers finish.
                    await self._ownership.release_unstarted()
                    break

    async def _read_once(self) -> list[Item] | None:
        """One round trip (acks and a read); the entries it fetched, if any."""
        s = self._state
        ids = self._acker.take()
        # The acks ahead of the read free their slots for it, unless another shard's reader
        # waits for slots: then they go to it, not back to this reader (slots.py).
        freed = 0 if s.slots.others_first(s.stream) else len(ids)
        count = max(0, min(s.free + freed, self._max_read))  # 0: only carry the acks
        if not ids and not count:
            return None  # the acker sent them meanwhile; the slots come back with its reply
        # Shards share their slots: a blocking read reserves one slot, not all of them, or an
        # idle shard would hold every slot for a whole BLOCK while a busy one waits. A shard
        # that finds entries reads on without BLOCK, for every free slot.
        block = not ids and (not s.slots.shared or self._idle)
        if block and s.slots.shared:
            count = 1
        # Reserved while the request is out (slots.py), and given back on the way out of here,
        # with no await before the caller takes what came.
        s.slots.take(count, s.stream)
        try:
            return await self._read_reserved(ids, count, block)
        finally:
            s.slots.give_back(count)

    async def _read_reserved(self, ids: list[str], count: int, block: bool) -> list[Item] | None:
        s = self._state
        try:
            reply = await self._ack_and_read(ids, count, block)
        except TRANSIENT_ERRORS as exc:  # before ResponseError: READONLY is one
            s.connected = False
            s.stats.read_errors += 1
            delay = s.backoff.next_delay()
            log.warning("stream %s: read failed (%s); retrying in %.1fs", s.stream, exc, delay)
            await s.pause(delay)
            return None
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self._group.recreate()
            else:  # WRONGTYPE, NOPERM...: this stream only, until the cause is fixed
                await s.pause(s.health.failed("read", RAW_XREADGROUP, s.stream, exc))
            return None
        except RedisError as exc:  # a reply redis-py could not parse, and the like
            await s.pause(s.health.failed("read", RAW_XREADGROUP, s.stream, exc))
            return None
        if not s.connected:
            log.info("stream %s: reading again", s.stream)
        s.connected = True
        s.backoff.reset()
        if s.health.problems:
            s.health.ok("read", "consumer")  # a restarted consumer reads again: resumed
        if count == 0:
            return None
        s.stats.reads += 1
        s.progressed()
        raw_entries: list[Any] = reply[0][1] if reply else []
        if self._history is not None:
            return await self._history_items(raw_entries)
        s.ready.set()
        self._idle = not raw_entries
        return [(e[0].decode(), e[1], 1) for e in raw_entries]

    async def _history_items(self, raw_entries: list[Any]) -> list[Item]:
        """A page of our own pending history; its end makes the reader switch to ``>``."""
        s = self._state
        if not raw_entries:
            if self._recovered:
                log.info("stream %s: recovered %d entries left pending by this consumer's "
                         "previous run", s.stream, self._recovered)
            self._history = None
            s.ready.set()
            return []
        self._history = raw_entries[-1][0].decode()
        self._recovered += len(raw_entries)
        return await self._with_history_deliveries(raw_entries)

    def _block_for(self) -> int:
        """BLOCK for a read: the configured one, cut short by the next reclaim or retry."""
        wake = self._reclaimer.wake_at() - _now()
        return max(1, min(self._block_ms, int(wake * 1000) + 1))

    def _read_args(self, count: int, block: bool) -> list[Any]:
        s = self._state
        args: list[Any] = ["GROUP", s.group, s.consumer, "COUNT", count]
        if self._history is not None:
            return [*args, "STREAMS", s.stream, self._history]
        if block:
            args += ["BLOCK", self._block_for()]
        return [*args, "STREAMS", s.stream, ">"]

    async def _ack_and_read(self, ids: list[str], count: int, block: bool) -> Any:
        """One round trip: fenced-ack ``ids``, then XREADGROUP up to ``count`` entries."""
        if not ids:
            read = (RAW_XREADGROUP, *self._read_args(count, block))
            if self._wire is None:
                return await self._client.execute_command(*read)
            (reply,) = await self._wire.call(read)
            if isinstance(reply, Exception):
                raise reply
            return reply
        # Carrying acks: do not park them behind a blocking read of an idle stream.
        read = (RAW_XREADGROUP, *self._read_args(count, False))
        try:
            results = await self._round_trip(ids, read if count else None)
        except BaseException:
            self._acker.put_back(ids)  # not known to be acked: the acker retries them
            raise
        self._acker.settle_carried(ids, results[0])
        if not count:
            return None
        if isinstance(results[1], Exception):
            raise results[1]
        return results[1]

    async def _round_trip(self, ids: list[str], read: tuple[Any, ...] | None) -> list[Any]:
        """The fenced ack of ``ids`` and then ``read``, in one write; both replies."""
        keys, args = self._acker.args(ids, joined=self._wire is None)
        if self._wire is None:
            pipe = self._client.pipeline(transaction=False)
            pipe.execute_command("EVAL", Scripts.FENCED_ACK_SOURCE, len(keys), *keys, *args)
            if read:
                pipe.execute_command(*read)
            try:
                return list(await pipe.execute(raise_on_error=False))
            finally:
                await pipe.reset()
        ack = ("EVALSHA", Scripts.FENCED_ACK_SHA, len(keys), *keys, *args)
        results = await self._wire.call(ack, read) if read else await self._wire.call(ack)
        if isinstance(results[0], NoScriptError):
            # The server lost its script cache (restart, failover, SCRIPT FLUSH): the read has
            # gone through, so the ack follows at once by source, before anything it read runs.
            # This consumer holds up to len(ids) entries over `concurrency` for that round trip.
            (results[0],) = await self._wire.call(
                ("EVAL", Scripts.FENCED_ACK_SOURCE, len(keys), *keys, *args))
        return results

    async def _with_history_deliveries(self, raw_entries: list[Any]) -> list[Item]:
        """Our own pending entries re-read: their delivery count comes from XPENDING."""
        s = self._state
        first, last = raw_entries[0][0], raw_entries[-1][0]
        counts: dict[str, int] = {}
        try:
            rows = await self._client.xpending_range(
                s.stream, s.group, min=first, max=last, count=len(raw_entries),
                consumername=s.consumer,
            )
            counts = {text(r["message_id"]): int(r["times_delivered"]) for r in rows}
        except (*TRANSIENT_ERRORS, RedisError) as exc:  # run them anyway, as redeliveries
            log.warning("stream %s: could not read delivery counts (%s)", s.stream, exc)
        items = []
        for entry_id_b, kv in raw_entries:
            entry_id = entry_id_b.decode()
            items.append((entry_id, kv, counts.get(entry_id, 2)))
        return items
