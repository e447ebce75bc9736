"""When a failed entry is due again: backoff by delivery count, or the handler's Retry(after=)."""

from __future__ import annotations

import heapq
import random


class RetrySchedule:
    """Failed entries this consumer still owns, waiting for their next delivery.

    They stay leased (see lease.py) until due, so a peer does not take them early; when due
    they are handed back for XAUTOCLAIM, which counts the delivery, by us or by any peer.
    """

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self._due: dict[str, tuple[float, int]] = {}  # id -> (due time, deliveries so far)
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._due

    def delay(self, delivery: int, after: float | None = None) -> float:
        """Seconds before the next delivery: ``after`` if the handler said, else exponential."""
        if after is not None:
            return max(0.0, after)
        raw = min(self.cap, self.base * 2 ** max(0, delivery - 1))
        return raw * random.uniform(0.8, 1.0)  # jitter: failed peers do not retry in lockstep

    def add(self, entry_id: str, delivery: int, due: float) -> None:
        self._due[entry_id] = (due, delivery)
        heapq.heappush(self._heap, (due, entry_id))

    def discard(self, entry_id: str) -> None:
        self._due.pop(entry_id, None)

    def ids(self) -> list[str]:
        return list(self._due)

    def next_due(self) -> float | None:
        while self._heap:
            due, entry_id = self._heap[0]
            current = self._due.get(entry_id)
            if current is not None and current[0] == due:
                return due
            heapq.heappop(self._heap)  # discarded or rescheduled
        return None

    def pop_due(self, now: float) -> list[tuple[str, int]]:
        """(id, deliveries so far) of every entry due by ``now``."""
        out: list[tuple[str, int]] = []
        while (due := self.next_due()) is not None and due <= now:
            _, entry_id = heapq.heappop(self._heap)
            _, delivery = self._due.pop(entry_id)
            out.append((entry_id, delivery))
        return out
