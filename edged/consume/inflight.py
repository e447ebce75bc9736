"""Which in-flight entries need their lease extended.

Every entry fetched by this consumer is in flight until its outcome is settled in Redis. At
each tick (a quarter of claim-idle) the entries that were already in flight at the previous
tick are renewed: an entry's idle time therefore never grows past half of claim-idle while we
work on it, and a peer's XAUTOCLAIM leaves it alone. Generations instead of timestamps keep
the per-entry cost to one dict store and one delete.
"""

from __future__ import annotations

from collections.abc import Iterable


class InFlight:
    def __init__(self) -> None:
        self._gen = 0
        self._entries: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def add_many(self, ids: Iterable[str]) -> None:
        gen = self._gen
        entries = self._entries
        for entry_id in ids:
            entries[entry_id] = gen

    def discard(self, entry_id: str) -> None:
        self._entries.pop(entry_id, None)

    def discard_many(self, ids: Iterable[str]) -> None:
        pop = self._entries.pop
        for entry_id in ids:
            pop(entry_id, None)

    def tick(self) -> list[str]:
        """Start a new generation; return the ids in flight since before the previous tick."""
        gen = self._gen
        self._gen += 1
        return [entry_id for entry_id, g in self._entries.items() if g < gen]

    def oldest(self) -> str | None:
        """The lowest id in flight (used to recreate a lost group without skipping it)."""
        if not self._entries:
            return None
        return min(self._entries, key=lambda i: tuple(int(p) for p in i.split("-")))
