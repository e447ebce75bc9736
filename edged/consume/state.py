"""What the parts of one stream's consumer share: its slots, the entries it holds, the flags.

The reader, the reclaimer, the workers, the acker and the ownership loop each do one job and
meet only here. Counting is exact: ``free`` goes down when the reader or the reclaimer takes
entries and back up only once their outcome is settled in Redis (acked, dead-lettered, waiting
to retry, or lost to a peer), so this consumer never holds more than ``concurrency`` entries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio

from edged.backoff import Backoff
from edged.config import StreamConfig
from edged.consume.health import StreamHealth
from edged.consume.inflight import InFlight
from edged.consume.retry import RetrySchedule
from edged.consume.slots import Slots
from edged.consume.stats import StreamStats
from edged.consume.workqueue import WorkQueue

Item = tuple[str, list[bytes] | None, int]
"""One entry fetched for this consumer to run: ``(entry id, fields, delivery)``.

``fields`` is flat ``[name, value, ...]`` as Redis sent it, None when the entry was deleted
meanwhile; ``delivery`` is Redis's delivery count. Unpack it by position. A plain tuple, not a
NamedTuple: building a NamedTuple per entry was 6% of the daemon's time at concurrency 512
(py-spy, bench), the largest single cost the split added."""


class StreamState:
    def __init__(self, cfg: StreamConfig, consumer: str, stats: StreamStats | None = None,
                 health: StreamHealth | None = None, ready: anyio.Event | None = None,
                 slots: Slots | None = None) -> None:
        self.cfg = cfg
        self.stream = cfg.stream
        self.group = cfg.group
        self.consumer = consumer
        # Both outlive a restart of the stream's parts (consumer.py): counters never go back.
        self.stats = stats or StreamStats(cfg.stream, cfg.group)
        self.health = health or StreamHealth(cfg.stream, cfg.group)
        self.queue: WorkQueue[Item] = WorkQueue()
        # Shared by the shards of one logical stream (slots.py); ``held`` is this state's part.
        self.slots = slots or Slots(cfg.concurrency)
        self.slots.listen(cfg.stream, self.wake_reader)
        self.held = 0
        # Finished ids the reader waits for before a round trip while workers still have entries
        # to start: carrying a handful at a time would cost a round trip per handful.
        self.carry_min = 1
        # A worker whose handlers never suspend lets the reader run after this many entries, so
        # it carries the finished ones and fetches more while the rest of the batch runs.
        self.worker_turn = 128
        self.inflight = InFlight()  # fetched here and not settled yet
        self.lost: set[str] = set()  # in flight here, but a peer owns them now
        self.retries = RetrySchedule(cfg.retry_backoff.seconds, cfg.retry_backoff_max.seconds)
        self.last_error: dict[str, str] = {}  # id -> why its last run here failed
        self.unstarted: list[Item] = []  # fetched, never started: handed back at the stop
        # Per worker: the id it runs and its cancel scope, so a lost lease cancels just that one.
        self.running: list[str | None] = [None] * cfg.concurrency
        self.worker_scopes: list[anyio.CancelScope | None] = [None] * cfg.concurrency
        self.stopping = False
        self.connected = False
        # Set after the first successful read; kept across restarts (READY=1 waits on it).
        self.ready = ready or anyio.Event()
        self.last_progress = time.monotonic()
        self.backoff = Backoff()  # the reader's; reset when a failover is announced
        self._wakeup = anyio.Event()  # ends a retry pause early: stop, or a failover announced
        # asyncio's Event, not anyio's, on the reader's path: anyio.Event() looks up the running
        # backend each time it is made, and the reader makes one per wait: at concurrency 16
        # that lookup was a tenth of the daemon's time (py-spy, bench). The backend is asyncio.
        self._slots = asyncio.Event()
        self._reader_waiting = False
        # `edged pause`: no reads and no reclaims while set; running handlers finish.
        self.paused = False
        self._resumed = anyio.Event()

    # ----------------------------------------------------------------- slots

    def take(self, items: list[Item]) -> None:
        """Fetched entries become ours to run; after a stop they are handed back unstarted."""
        self.slots.take(len(items))
        self.held += len(items)
        self.inflight.add_many(entry_id for entry_id, _, _ in items)
        if self.stopping:
            self.unstarted.extend(items)
        else:
            self.queue.put_many(items)

    def acked(self, ids: list[str]) -> None:
        """The acker settled ``ids`` (acked, or found to be a peer's): their slots come back."""
        self.inflight.discard_many(ids)
        if self.lost:
            self.lost.difference_update(ids)
        self._give_back(len(ids))

    def settled(self, entry_id: str) -> None:
        """The entry's outcome here is final (dead-lettered, waiting to retry, lost)."""
        self.inflight.discard(entry_id)
        self.lost.discard(entry_id)
        self._give_back(1)

    def _give_back(self, n: int) -> None:
        self.held -= n
        self.slots.give_back(n)  # wakes every reader of the slots, this one included

    @property
    def free(self) -> int:
        """The slots this stream's reader may take now (its turn, if shards share them)."""
        return self.slots.available(self.stream)

    def abandon(self) -> None:
        """These parts failed and are replaced: the slots they held come back to the budget
        (their entries stay pending here, and the new reader takes them again first)."""
        held, self.held = self.held, 0
        self.slots.give_back(held)

    def wake_reader(self) -> None:
        if self._reader_waiting:
            self._reader_waiting = False
            self._slots.set()

    def acks_waiting(self, waiting: int) -> None:
        """Finished ids wait to be carried: wake the reader once they make a round trip worth
        it, or once the workers have nothing left to start (then it carries what there is)."""
        if self._reader_waiting and (waiting >= self.carry_min or not self.queue):
            self._reader_waiting = False
            self._slots.set()

    def worth_a_round_trip(self, waiting: int) -> bool:
        """Whether the reader should go to Redis now, with ``waiting`` finished ids to carry."""
        return (self.free > 0 or waiting >= self.carry_min or (waiting > 0 and not self.queue)
                or self.stopping)

    async def wait_for_slots(self, acks_waiting: Callable[[], int]) -> None:
        """Park the reader until a round trip is worth it (see ``worth_a_round_trip``)."""
        while not self.worth_a_round_trip(acks_waiting()):
            self.slots.wait_turn(self.stream)
            self._slots = asyncio.Event()
            self._reader_waiting = True
            try:
                await self._slots.wait()
            finally:
                self._reader_waiting = False

    # ----------------------------------------------------------------- stop and pauses

    def set_paused(self, flag: bool) -> None:
        if flag == self.paused:
            return
        self.paused = flag
        if flag:
            self._resumed = anyio.Event()
        else:
            self._resumed.set()

    async def wait_resumed(self) -> None:
        """Park the reader while paused. A paused stream counts as read for READY=1: the
        daemon is ready, and reads it the moment it is resumed."""
        self.ready.set()
        while self.paused and not self.stopping:
            await self._resumed.wait()

    def stop(self) -> None:
        """Stop reading and starting entries; what was queued waits to be handed back."""
        self.stopping = True
        self._resumed.set()
        self.slots.leave(self.stream)
        self._wakeup.set()
        self.unstarted.extend(self.queue.close())
        self._slots.set()

    async def pause(self, delay: float) -> None:
        """Sleep before a retry, but wake at once when stopped or when a failover is announced."""
        if self.stopping:
            return
        self._wakeup = anyio.Event()
        with anyio.move_on_after(delay):
            await self._wakeup.wait()

    def retry_now(self) -> None:
        """A new primary was announced: stop backing off and reconnect at once."""
        self.backoff.reset()
        self._wakeup.set()

    def progressed(self) -> None:
        """A read completed (for /healthz and the watchdog)."""
        self.last_progress = time.monotonic()
