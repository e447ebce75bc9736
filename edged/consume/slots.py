"""Worker slots: how many more entries the consumers of one logical stream may hold.

An unsharded stream has slots of its own. The shards of a sharded stream share one set, so
``concurrency`` bounds the logical stream, whatever shard its entries come from, and a busy
shard can use the slots that quiet ones leave free.

Readers of a shared set *reserve* the count they ask Redis for before the request leaves and
give back what did not come: two shard readers asking at once can then never fetch more than
there are slots. They also take turns: a reader that found no free slot queues, and while
readers are queued only the first may take slots. Without the queue the reader whose read just
ended would take back at once the slot it had given back, and a shard whose reader waits could
starve for as long as the other shards have entries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class Slots:
    def __init__(self, size: int, readers: int = 1) -> None:
        self.size = size
        self.free = size
        self.shared = readers > 1
        self._wakers: dict[str, Callable[[], None]] = {}
        self._queue: deque[str] = deque()  # readers waiting for a slot, first come first

    def listen(self, reader: str, wake: Callable[[], None]) -> None:
        """Call ``wake`` when ``reader`` may take slots; a restarted reader replaces its waker."""
        self._wakers[reader] = wake

    def available(self, reader: str) -> int:
        """The slots ``reader`` may take now: none while another reader is first in the queue."""
        if self._queue and self._queue[0] != reader:
            return 0
        return self.free

    def others_first(self, reader: str) -> bool:
        """Another reader waits for slots ahead of ``reader``."""
        return bool(self._queue) and self._queue[0] != reader

    def wait_turn(self, reader: str) -> None:
        """``reader`` found no slot it may take: it queues (once) for the next ones."""
        if self.shared and reader not in self._queue:
            self._queue.append(reader)

    def leave(self, reader: str) -> None:
        """``reader`` stops: it gives up its place, and the next one gets its turn."""
        if reader in self._queue:
            self._queue.remove(reader)
            self._wake_first()

    def take(self, n: int, reader: str | None = None) -> None:
        self.free -= n
        if n > 0 and reader is not None and self._queue and self._queue[0] == reader:
            self._queue.popleft()  # served: the next in the queue may have the rest
            if self.free > 0:
                self._wake_first()

    def give_back(self, n: int) -> None:
        self.free += n
        if n > 0:
            self._wake_first()

    def _wake_first(self) -> None:
        if self._queue:
            wake = self._wakers.get(self._queue[0])
        elif len(self._wakers) == 1:
            wake = next(iter(self._wakers.values()))  # unshared: its one reader
        else:
            return  # nobody queued: every reader that wants slots can take them
        if wake is not None:
            wake()
