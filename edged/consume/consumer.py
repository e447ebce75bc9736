"""One stream, one consumer group: the parts wired together, their lifetimes, the stop.

Data flows one way: the reader (and the reclaimer, between reads) fetch entries into the
shared state's work queue; the workers run them and settle each outcome; the acker sends the
acks the reader did not carry; the ownership loop keeps leases and hands entries back. See
state.py for what they share.

``run`` returns once running work is finished, acked or handed back. ``stop`` ends reading at
once; running handlers get until the grace deadline, which is set on the scope the workers run
in (``stop`` may come before or after that scope opens).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from redis.asyncio import Redis

from edged.backoff import Backoff
from edged.config import StreamConfig
from edged.consume.acker import Acker
from edged.consume.group import GroupKeeper
from edged.consume.health import StreamHealth
from edged.consume.outcomes import Workers
from edged.consume.ownership import Ownership
from edged.consume.reader import MAX_READ, Reader
from edged.consume.reclaim import Reclaimer
from edged.consume.slots import Slots
from edged.consume.state import StreamState
from edged.consume.stats import StreamStats
from edged.handlers import HandlerCall
from edged.scripts import Scripts
from edged.shutdown import HAND_BACK_AND_FLUSH

log = logging.getLogger("edged.consumer")

# Parts that ran this long before failing were not crash-looping: the restart backoff starts over.
HEALTHY_RUN = 60.0


class StreamConsumer:
    def __init__(
        self,
        client: Redis,
        scripts: Scripts,
        cfg: StreamConfig,
        consumer: str,
        handler: HandlerCall,
        read_block: float = 1.0,
        slots: Slots | None = None,
        logical: str | None = None,
        shard: int = 0,
    ) -> None:
        self.cfg = cfg
        # A shard's logical stream (its config name) and index, shared slots included; an
        # unsharded stream is its own logical stream, shard 0, with slots of its own.
        self.logical = logical or cfg.stream
        self.shard = shard
        self._slots = slots or Slots(cfg.concurrency)
        self._client = client
        self._scripts = scripts
        self._consumer = consumer
        self._handler = handler
        self._read_block = read_block
        self._stats = StreamStats(cfg.stream, cfg.group)
        self.health = StreamHealth(cfg.stream, cfg.group)
        self._ready = anyio.Event()  # one for the stream's life: the daemon's READY=1 waits on it
        self.restarts = 0
        # Restarts back off on their own: a read that works in between does not reset it, so a
        # fault that recurs after each restart is retried ever more slowly, not every 0.5 s.
        self._restart_backoff = Backoff(base=0.5, cap=30.0)
        self._stopping = False
        self._grace_deadline: float | None = None
        self._work_scope: anyio.CancelScope | None = None
        self.paused = False  # `edged pause`; kept across restarts of the parts
        self._build()

    def _build(self) -> None:
        """Fresh parts around a fresh state; counters and health carry over."""
        cfg, consumer = self.cfg, self._consumer
        self.state = state = StreamState(cfg, consumer, self._stats, self.health, self._ready,
                                         self._slots)
        state.set_paused(self.paused)
        # Reads ask for every free slot: under load, batch size beats overlap (measured).
        max_read = min(cfg.concurrency, MAX_READ)
        # While workers have entries left to start, the reader waits for a quarter of a read's
        # worth of finished ids: a round trip per handful would cost more than it overlaps.
        state.carry_min = max(1, max_read // 4)
        # Measured (bench, no-op handler): half a read at concurrency 64 (0.4x to 0.6x a raw
        # loop), a quarter at 512 (0.5x to 0.9x), at most 128: longer turns leave the reader's
        # reply waiting behind the batch, shorter ones cost more round trips than they overlap.
        state.worker_turn = max(16, min(128, max_read // 2 if max_read <= 64 else max_read // 4))
        self._acker = Acker(self._scripts, cfg.stream, cfg.group, consumer, state.stats,
                            state.acked, others=cfg.concurrency, health=self.health)
        self._acker.on_finished = state.acks_waiting
        self._group = GroupKeeper(state, self._client)
        self._ownership = Ownership(state, self._scripts)
        reclaimer = Reclaimer(state, self._scripts, self._group, self._ownership, max_read)
        self._reader = Reader(state, self._client, self._acker, reclaimer, self._group,
                              self._ownership, self._read_block, max_read)
        self._workers = Workers(state, self._handler, self._acker, self._scripts)
        self._work_scope = None

    # What the daemon's status reads.
    @property
    def stream(self) -> str:
        return self.state.stream

    @property
    def group(self) -> str:
        return self.state.group

    @property
    def stats(self) -> StreamStats:
        return self.state.stats

    @property
    def ready(self) -> anyio.Event:
        return self._ready

    @property
    def connected(self) -> bool:
        return self.state.connected

    @property
    def last_progress(self) -> float:
        return self.state.last_progress

    def stop(self, grace_deadline: float) -> None:
        """Stop reading and taking new entries; running handlers get until ``grace_deadline``."""
        if self._stopping:
            return
        self._stopping = True
        self._grace_deadline = grace_deadline
        self.state.stop()
        if self._work_scope is not None:
            self._work_scope.deadline = grace_deadline

    def retry_now(self) -> None:
        """A new primary was announced: stop backing off and reconnect at once."""
        self.state.retry_now()

    def set_paused(self, flag: bool) -> None:
        """`edged pause` / `resume`: stop or go on reading; running handlers finish."""
        self.paused = flag
        self.state.set_paused(flag)

    async def ensure_group(self, start_id: str | None = None) -> bool:
        """Create the group (and the stream) unless it exists; True if it was created."""
        return await self._group.ensure(start_id)

    async def run(self) -> None:
        """Consume until stopped; returns once running work is finished, acked or handed back.

        The supervisor: Redis errors are handled where they happen (the loops back off, or
        degrade the stream: health.py). Anything that still escapes (a reply we do not
        understand, a bug) ends this stream's parts only: it is logged with its traceback and
        the stream starts again on fresh parts after a backoff. What it held stays pending
        under this consumer's name, and the new reader takes it back first (its history).
        """
        while True:
            started = anyio.current_time()
            try:
                await self._run_parts()
                if self._stopping:
                    return
                # Ended without a stop (a CancelledError that was not ours, say): not done.
                raise RuntimeError("the stream's parts ended without a stop")
            except Exception as exc:
                if self._stopping:
                    log.exception("stream %s: failed while stopping", self.cfg.stream)
                    return
                delay = self._failed(exc, anyio.current_time() - started)
            self.state.abandon()
            await self.state.pause(delay)
            if self._stopping:
                return
            self._build()

    def _failed(self, exc: Exception, ran: float) -> float:
        """Count and log a failure of the stream's parts; how long to wait before a restart."""
        self.restarts += 1
        if ran > HEALTHY_RUN:
            self._restart_backoff.reset()
        delay = self._restart_backoff.next_delay()
        self.health.failed("consumer", "consuming", self.cfg.stream, exc)
        log.exception("stream %s: consumer failed; starting it again in %.1fs",
                      self.cfg.stream, delay)
        return delay

    async def _run_parts(self) -> None:
        await self._group.ensure_until_ok()
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._acker.run)
            outer.start_soon(self._reader.run)
            leases = anyio.CancelScope()
            outer.start_soon(_run_in, leases, self._ownership.lease_loop)
            await self._work()
            leases.cancel()
            # The clean-up phase, bounded: hand back, then let the acker flush and end.
            outer.cancel_scope.deadline = anyio.current_time() + HAND_BACK_AND_FLUSH
            await self._hand_back()
            self._acker.close()

    async def _work(self) -> None:
        """Run the workers until the queue closes; the grace deadline is set on their scope."""
        with anyio.CancelScope() as work_scope:
            self._work_scope = work_scope
            if self._grace_deadline is not None:
                work_scope.deadline = self._grace_deadline
            async with anyio.create_task_group() as workers:
                for index in range(self.cfg.concurrency):
                    workers.start_soon(self._workers.run, index)

    async def _hand_back(self) -> None:
        """After the workers: unstarted entries and waiting retries go back to the group, so a
        peer takes them now rather than after claim-idle."""
        await self._ownership.release_unstarted()
        await self._ownership.release_waiting_retries(float("inf"), why="waiting to retry")


async def _run_in(scope: anyio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await fn()



