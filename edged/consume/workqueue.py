"""Entries fetched by the reader, shared by the stream's workers.

Handing entries over one channel message at a time costs a task switch per entry. Here the
reader drops a whole batch into a deque and wakes *one* idle worker; a worker that takes an
entry while more are waiting wakes one more before it runs its handler. A handler that never
suspends therefore lets one worker run through the batch with no task switch per entry, and a
handler that does suspend starts the next entry on the next loop turn.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class WorkQueue(Generic[T]):
    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._waking = 0  # woken workers that have not run yet
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: Iterable[T]) -> None:
        self._items.extend(items)
        self._wake_one()

    def _wake_one(self) -> None:
        if self._waking or not self._items:
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._waking += 1
                return

    async def get(self) -> T | None:
        """The next entry, or None once the queue is closed (stop taking work)."""
        while True:
            if self._closed:
                return None
            items = self._items
            if items:
                item = items.popleft()
                if items:
                    self._wake_one()
                return item
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    # Woken, then cancelled before running: pass the wake-up on.
                    self._waking -= 1
                    self._wake_one()
                else:
                    fut.cancel()
                raise
            self._waking -= 1

    def close(self) -> list[T]:
        """Stop handing out entries; wake every idle worker; return the entries never started."""
        self._closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._waking += 1
        left = list(self._items)
        self._items.clear()
        return left
