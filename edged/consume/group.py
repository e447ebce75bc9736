"""The consumer group of one stream: create it, and recreate it when a failover loses it.

A replica promoted by Sentinel may never have seen the group (or an operator deleted it). It is
recreated from a floor noted once per reclaim pass, never from ``$``: just before the oldest
entry still pending in the group (or its last-delivered id when nothing is pending), and never
above an entry still in flight here. Entries after the floor are delivered again; none is
skipped.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from edged.connect.transient import TRANSIENT_ERRORS
from edged.consume.state import StreamState
from edged.ids import id_before, id_key
from edged.replies import text

log = logging.getLogger("edged.consumer")


class GroupKeeper:
    def __init__(self, state: StreamState, client: Redis) -> None:
        self._state = state
        self._client = client
        self._floor = "0"  # where a lost group is recreated; see note_floor

    async def ensure(self, start_id: str | None = None) -> bool:
        """Create the group (and the stream) unless it exists; True if it was created."""
        s = self._state
        start_id = start_id or s.cfg.start_id
        try:
            await self._client.xgroup_create(s.stream, s.group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        log.info("stream %s: created group %s at %s", s.stream, s.group, start_id)
        return True

    async def ensure_until_ok(self, start_id: str | None = None) -> None:
        """``ensure``, retried with backoff while Redis is away, until it works or we stop."""
        s = self._state
        while not s.stopping:
            try:
                await self.ensure(start_id)
            except TRANSIENT_ERRORS as exc:
                s.connected = False
                delay = s.backoff.next_delay()
                log.warning("stream %s: Redis unavailable (%s); retrying in %.1fs",
                            s.stream, exc, delay)
                await s.pause(delay)
            except RedisError as exc:  # WRONGTYPE (not a stream), NOPERM...: this stream only
                s.connected = True
                await s.pause(s.health.failed("group", "XGROUP CREATE", s.stream, exc))
            else:
                s.connected = True
                s.health.ok("group")
                return

    async def note_floor(self) -> None:
        """Remember where the group could be recreated without skipping an unacked entry.

        Sampled once per reclaim pass: older is only ever safer.
        """
        s = self._state
        try:
            summary = await self._client.xpending(s.stream, s.group)
            oldest = summary.get("min")
            if oldest:
                self._floor = id_before(text(oldest))
                return
            for info in await self._client.xinfo_groups(s.stream):
                if text(info["name"]) == s.group:
                    self._floor = text(info["last-delivered-id"])
        except (*TRANSIENT_ERRORS, ResponseError):
            pass  # the group is gone: the next read notices and recreates it

    async def recreate(self) -> None:
        """The group vanished under us: recreate it at the floor, below anything in flight."""
        s = self._state
        floor = self._floor
        oldest_inflight = s.inflight.oldest()
        if oldest_inflight is not None and id_key(id_before(oldest_inflight)) < id_key(floor):
            floor = id_before(oldest_inflight)
        s.stats.groups_recreated += 1
        log.warning("stream %s: group %s is gone (failover?); recreating it at %s so that no "
                    "unacked entry is skipped", s.stream, s.group, floor)
        await self.ensure_until_ok(start_id=floor)
