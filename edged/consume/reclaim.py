"""Taking over idle entries with XAUTOCLAIM, and handing back retries that fell due.

Runs in the reader's loop, between reads, so reclaimed entries use the same free slots and the
same workers as read ones. One step claims at most the free slots; a pass runs the cursor until
it wraps to ``0-0``, then waits ``claim-interval``. Delivery counts come from Redis in the same
script (lua/reclaim.lua), and ids whose entry was deleted or trimmed from the stream are
dropped from the pending list by Redis and counted here.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from redis.exceptions import RedisError, ResponseError

from edged.connect.transient import TRANSIENT_ERRORS
from edged.consume.group import GroupKeeper
from edged.consume.ownership import Ownership
from edged.consume.state import Item, StreamState
from edged.scripts import Scripts

log = logging.getLogger("edged.consumer")


class Reclaimer:
    def __init__(self, state: StreamState, scripts: Scripts, group: GroupKeeper,
                 ownership: Ownership, max_read: int) -> None:
        self._state = state
        self._scripts = scripts
        self._group = group
        self._ownership = ownership
        self._max_read = max_read
        self._next = 0.0  # reclaim at once on start: a dead peer may have left work
        self._cursor = "0-0"

    def wake_at(self) -> float:
        """When the reader must be back from a blocking read: the next reclaim or retry."""
        due = self._state.retries.next_due()
        return self._next if due is None else min(self._next, due)

    async def run_due(self) -> bool:
        """Hand back retries that are due and run a reclaim step if one is due; True if done."""
        s = self._state
        now = anyio.current_time()
        did = await self._ownership.release_waiting_retries(now, why="due for retry")
        if did:
            self._next = now  # take them back at once (or a peer does)
        if now >= self._next and s.free > 0:
            await self.step()
            did = True
        return did

    async def step(self) -> None:
        """One XAUTOCLAIM step of the current pass; the pass ends when the cursor wraps."""
        s = self._state
        count = min(s.free, self._max_read)
        s.slots.take(count, s.stream)  # reserved while the request is out, as the reader's (slots.py)
        try:
            cursor, entries, counts, deleted = await self._scripts.reclaim(
                s.stream, s.group, s.consumer, s.cfg.claim_idle.ms, self._cursor, count,
            )
        except TRANSIENT_ERRORS as exc:
            log.warning("stream %s: reclaim failed (%s)", s.stream, exc)
            self._next = anyio.current_time() + s.cfg.claim_interval.seconds
            return
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self._group.recreate()
                return
            self._failed(exc)
            return
        except RedisError as exc:
            self._failed(exc)
            return
        finally:
            s.slots.give_back(count)
        if s.health.problems:
            s.health.ok("reclaim")
        if deleted:
            s.stats.deleted += len(deleted)
            log.warning("stream %s: %d pending entries were deleted or trimmed from the stream "
                        "and dropped from the pending list: %s", s.stream, len(deleted),
                        " ".join(deleted[:10]))
        self._take(entries, counts)
        self._cursor = cursor
        if cursor in ("0-0", "0"):
            self._cursor = "0-0"
            self._next = anyio.current_time() + s.cfg.claim_interval.seconds
            await self._group.note_floor()

    def _failed(self, exc: RedisError) -> None:
        """Not transient (NOPERM on the script, WRONGTYPE...): try again after a backoff."""
        s = self._state
        delay = s.health.failed("reclaim", "XAUTOCLAIM", s.stream, exc)
        self._next = anyio.current_time() + max(delay, s.cfg.claim_interval.seconds)

    def _take(self, entries: list[Any], counts: list[int]) -> None:
        s = self._state
        items: list[Item] = []
        for entry, delivery in zip(entries, counts, strict=True):
            if not entry:
                continue
            entry_id = entry[0].decode()
            if entry_id in s.inflight:
                continue  # already ours and queued or running: never run an entry twice
            s.retries.discard(entry_id)
            items.append((entry_id, entry[1] or None, delivery))
        if items:
            s.stats.reclaimed += len(items)
            log.info("stream %s: reclaimed %d idle entries (%s..%s)", s.stream, len(items),
                     items[0][0], items[-1][0])
            s.take(items)
