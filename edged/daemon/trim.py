"""Safe retention: one daemon of the fleet trims each stream, below what every group needs.

Each stream with ``retention`` or ``max-len`` (and each dead-letter stream with its own) is
trimmed every ``trim-interval`` by the daemon holding its lease, ``<prefix>trim:<stream>``
(``SET NX PX`` of 2 intervals, renewed by its holder on each tick), so that a fleet of
hundreds of hosts does not run the same script hundreds of times. Two daemons trimming at once
(a lease that expired during a pause) are still safe: the floor and the XTRIM are one atomic,
idempotent script (lua/trim.lua). On a cluster the lease lives in another slot than the
stream; it is a command of its own, so that is fine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edged.connect.transient import TRANSIENT_ERRORS
from edged.keys import trim_lease_key
from edged.layout import TrimTarget
from edged.replies import text
from edged.scripts import Scripts, TrimResult

log = logging.getLogger("edged.retention")

LEASE_TURNS = 2
"""The lease lasts this many trim intervals: its holder renews it on each tick."""


@dataclass
class RetentionState:
    """What the trims of one stream did, read by the metrics at scrape time."""

    target: TrimTarget
    trimmed: int = 0
    blocked: dict[str, float] = field(default_factory=dict)
    """Group → seconds past retention of the entry it holds back (0 when not blocked)."""
    holding_lease: bool = False
    last: TrimResult | None = None
    said: tuple[bool, str | None] = (False, None)
    """(blocked, holder) last logged: a WARNING only when it changes."""

    def __post_init__(self) -> None:
        self.blocked[self.target.group] = 0.0


class Trimmer:
    """The trim loops of one daemon, one per target."""

    def __init__(self, client: Redis, scripts: Scripts, prefix: str, consumer: str,
                 targets: list[TrimTarget]) -> None:
        self.client = client
        self.scripts = scripts
        self.prefix = prefix
        self.consumer = consumer
        self.states = {t.stream: RetentionState(t) for t in targets}

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for state in self.states.values():
                tg.start_soon(self._loop, state)

    async def _loop(self, state: RetentionState) -> None:
        # The first trim waits one interval: the reader creates its group meanwhile.
        while True:
            await anyio.sleep(state.target.interval)
            try:
                await self.tick(state)
            except (*TRANSIENT_ERRORS, RedisError) as exc:  # Redis away: next tick
                log.warning("stream %s: trim skipped (%s)", state.target.stream, exc)

    async def tick(self, state: RetentionState) -> TrimResult | None:
        """Trim once if the lease is ours; the result, or None when another daemon trims."""
        t = state.target
        state.holding_lease = await self._lease(t)
        if not state.holding_lease:
            for group in state.blocked:  # the holder reports; max() over hosts stays right
                state.blocked[group] = 0.0
            return None
        result = await self.scripts.trim(t.stream, t.retention_ms, t.max_len, "trim", t.no_group)
        self.record(state, result)
        return result

    async def _lease(self, t: TrimTarget) -> bool:
        key = trim_lease_key(self.prefix, t.stream)
        ttl = max(round(t.interval * 1000 * LEASE_TURNS), 1)
        if await self.client.set(key, self.consumer, nx=True, px=ttl):
            return True
        holder = await self.client.get(key)
        if holder is not None and text(holder) == self.consumer:
            await self.client.pexpire(key, ttl)
            return True
        return False

    @staticmethod
    def record(state: RetentionState, result: TrimResult) -> None:
        state.last = result
        state.trimmed += result.trimmed or 0
        if result.trimmed:
            log.debug("stream %s: trimmed %d entries %s .. %s", result.stream, result.trimmed,
                      result.first_id, result.last_id)
        for group in state.blocked:
            state.blocked[group] = 0.0
        holder = result.holder if result.blocked else None
        if holder is not None:
            state.blocked[holder] = result.past_seconds
        said = (result.blocked, holder)
        if said == state.said:
            return
        state.said = said
        if result.blocked:
            log.warning("stream %s: retention blocked by %s: entry %s is kept %.0fs past "
                        "retention (floor %s)", result.stream, blocker(holder),
                        result.held_id, result.past_seconds, result.floor)
        else:
            log.info("stream %s: retention no longer blocked", result.stream)


def blocker(holder: str | None) -> str:
    """Who holds trimming back, in words."""
    if not holder:
        return "no consumer group (the stream has none: nothing has read it yet)"
    return f"group {holder}"
