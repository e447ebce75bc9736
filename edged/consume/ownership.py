"""Keeping and giving up ownership of entries: leases, leases lost to peers, hand-back.

Leases: every quarter of claim-idle, the entries in flight since the previous tick (and those
waiting for a retry) get their idle time reset by lua/lease.lua, which also reports the ones a
peer has claimed meanwhile. Those are lost: never acked here, never started, and their running
handler is cancelled (``cancel-on-lost-lease``).

Hand-back: entries this consumer owns but will not run (fetched after a stop, due for a retry)
are made to look long idle with their delivery count set back, so the next XAUTOCLAIM, ours or
a peer's, takes them at once instead of after claim-idle.
"""

from __future__ import annotations

import logging

import anyio
from redis.exceptions import RedisError

from edged.backoff import Backoff
from edged.connect.transient import TRANSIENT_ERRORS
from edged.consume.state import Item, StreamState
from edged.scripts import Scripts

log = logging.getLogger("edged.consumer")

class Ownership:
    def __init__(self, state: StreamState, scripts: Scripts) -> None:
        self._state = state
        self._scripts = scripts

    async def lease_loop(self) -> None:
        """Extend leases until cancelled: handlers finishing within the grace keep theirs too."""
        s = self._state
        interval = max(0.025, s.cfg.claim_idle.seconds / 4)
        while True:
            await anyio.sleep(interval)
            ids = [i for i in s.inflight.tick() if i not in s.lost]
            ids += s.retries.ids()
            if not ids:
                if s.health.problems:
                    s.health.ok("lease")  # nothing left to keep: no lease can be failing
                continue
            try:
                lost = await self._scripts.extend_leases(s.stream, s.group, s.consumer, ids)
            except (*TRANSIENT_ERRORS, RedisError) as exc:  # NOGROUP, OOM...: leave it, go on
                log.warning("stream %s: could not extend %d leases (%s)", s.stream, len(ids), exc)
                if not isinstance(exc, TRANSIENT_ERRORS) and "NOGROUP" not in str(exc):
                    s.health.failed("lease", "XCLAIM", s.stream, exc)
                continue
            if s.health.problems:
                s.health.ok("lease")
            if lost:
                self.lost(lost)

    def lost(self, lost: list[str]) -> None:
        """A peer holds these now: never ack them here, and stop working on them."""
        s = self._state
        s.stats.lost_leases += len(lost)
        log.warning("stream %s: lost the lease on %d entries to another consumer (paused or slow "
                    "past claim-idle); their results will not be acked: %s",
                    s.stream, len(lost), " ".join(lost[:10]))
        for entry_id in lost:
            s.retries.discard(entry_id)
        # Still in flight here until its handler ends (or our own reclaim would fetch it again
        # while it still runs), but never renewed nor started again.
        s.lost.update(i for i in lost if i in s.inflight)
        if not s.cfg.cancel_on_lost_lease:
            return
        lost_set = set(lost)
        for index, running in enumerate(s.running):
            scope = s.worker_scopes[index]
            if running in lost_set and scope is not None:
                scope.cancel()

    async def release(self, items: list[Item]) -> None:
        """Hand back entries fetched but never started, without counting a delivery."""
        if not items:
            return
        s = self._state
        released = await self.release_ids(
            [(entry_id, delivery) for entry_id, _, delivery in items], why="fetched but unstarted"
        )
        s.stats.released += released
        s.inflight.discard_many(entry_id for entry_id, _, _ in items)

    async def release_unstarted(self) -> None:
        """Hand back what the stop left fetched and unstarted."""
        s = self._state
        s.unstarted.extend(s.queue.close())
        unstarted, s.unstarted = s.unstarted, []
        await self.release(unstarted)

    async def release_waiting_retries(self, now: float, why: str) -> bool:
        """Hand back retries due by ``now`` with their delivery count unchanged (they did run):
        the next XAUTOCLAIM, ours or a peer's, takes them and counts the new delivery."""
        due = self._state.retries.pop_due(now)
        if due:
            await self.release_ids([(entry_id, delivery + 1) for entry_id, delivery in due], why)
        return bool(due)

    async def release_ids(self, entries: list[tuple[str, int]], why: str) -> int:
        """Make (id, delivery) entries we own look long idle, their delivery count set to n-1;
        returns how many were ours.

        At a stop, a hand-back that failed for want of Redis is tried again with backoff until
        the clean-up deadline (the caller's scope) ends it: a failover under way often ends
        within it, and a handed-back entry is taken by a peer at once, not after claim-idle.
        """
        try:
            released = await self._release_retrying(entries)
        except anyio.get_cancelled_exc_class():
            if self._state.stopping:
                self._not_handed_back(entries, "the clean-up time ran out")
            raise
        if released is not None:
            log.info("stream %s: handed back %d %s entries", self._state.stream, released, why)
        return released or 0

    async def _release_retrying(self, entries: list[tuple[str, int]]) -> int | None:
        s = self._state
        backoff = Backoff(base=0.1, cap=2.0)
        while True:
            try:
                return await self._scripts.fenced_release(s.stream, s.group, s.consumer, entries)
            except (*TRANSIENT_ERRORS, RedisError) as exc:  # NOGROUP, OOM...: leave it, go on
                if not (s.stopping and isinstance(exc, TRANSIENT_ERRORS)):
                    self._not_handed_back(entries, str(exc))
                    return None
            await anyio.sleep(backoff.next_delay())

    def _not_handed_back(self, entries: list[tuple[str, int]], why: str) -> None:
        log.warning("stream %s: could not hand back %d entries (%s); they are taken after "
                    "claim-idle", self._state.stream, len(entries), why)
