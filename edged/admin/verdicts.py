"""Group health: samples of each group, the verdicts two samples give, the groups and status
reports.

Group verdicts, most severe first (``verdict`` is the first that applies; ``verdicts`` all):

- ``STUCK``: pending entries idle longer than claim-idle + claim-interval of that stream (config,
  else 60s + 5s): a live edged daemon would have reclaimed or leased them by then.
- ``STALLED``: lag > 0 in both samples and neither the last-delivered id, entries-read nor the
  pending count moved between them.
- ``ORPHANED``: a consumer owns pending entries and has no live heartbeat record.
- ``BEHIND``: the lag grew between the two samples.
- ``OK``: none of these.

STALLED and BEHIND compare two samples of the group; without a second sample they are not
given (``sampled_seconds`` is None).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio
import msgspec
from redis.asyncio import Redis

from edged.admin.lookup import (
    PAGE,
    SCAN_COUNT,
    NotFound,
    age_of,
    dead_letter_of,
    groups_of,
    server_ms,
    stuck_after,
)
from edged.admin.registry import DaemonRecord, Registry, read_registry
from edged.config import Config
from edged.layout import key_prefix
from edged.replies import int_or_none, text

OK = "OK"
BEHIND = "BEHIND"
STALLED = "STALLED"
STUCK = "STUCK"
ORPHANED = "ORPHANED"
SEVERITY = (STUCK, STALLED, ORPHANED, BEHIND)
"""Verdicts other than OK, most severe first."""

LAG_COUNT_LIMIT = 10_000
"""When Redis reports no lag, count the undelivered entries up to this many, else say unknown."""
STUCK_COUNT_LIMIT = 1000
"""STUCK entries are counted up to this many."""


class GroupSample(msgspec.Struct, frozen=True):
    """What XINFO GROUPS and XPENDING say about one group at one moment."""

    stream: str
    group: str
    consumers: int
    pending: int
    last_delivered_id: str
    entries_read: int | None
    lag: int | None
    lag_source: str
    """``redis`` (XINFO GROUPS), ``counted`` (entries after the last-delivered id) or
    ``unknown``."""
    lowest_pending_id: str | None
    owners: dict[str, int]
    """Consumer → pending entries it owns."""
    time_ms: int
    """Server time of the sample."""


class GroupHealth(msgspec.Struct, frozen=True):
    stream: str
    group: str
    consumers: int
    pending: int
    last_delivered_id: str
    entries_read: int | None
    lag: int | None
    lag_source: str
    lag_change: int | None
    """Lag now minus lag at the first sample; None with one sample or an unknown lag."""
    oldest_pending_age_seconds: float | None
    stuck_pending: int
    """Entries idle longer than ``stuck_after_seconds`` (counted up to 1000)."""
    stuck_after_seconds: float
    """claim-idle + claim-interval of this stream (config, else the defaults)."""
    orphaned_pending: int
    orphaned_consumers: list[str]
    dead_letter: str
    dead_letters: int
    sampled_seconds: float | None
    """Time between the two samples compared; None when only one was taken."""
    verdict: str
    verdicts: list[str]
    reasons: list[str]


class GroupsReport(msgspec.Struct, frozen=True):
    groups: list[GroupHealth]
    healthy: bool
    """Every verdict is OK."""


class StatusReport(msgspec.Struct, frozen=True):
    daemons: list[DaemonRecord]
    groups: list[GroupHealth]
    healthy: bool
    """Every daemon ready and every verdict OK."""


async def _count_after(client: Redis, stream: str, after: str) -> int | None:
    """Entries in ``stream`` after id ``after``, up to LAG_COUNT_LIMIT; None beyond."""
    n = 0
    start = f"({after}"
    while n <= LAG_COUNT_LIMIT:
        rows = list(await client.xrange(stream, min=start, max="+", count=PAGE) or [])
        n += len(rows)
        if len(rows) < PAGE:
            return n
        start = f"({text(rows[-1][0])}"
    return None


async def sample_group(client: Redis, stream: str, info: dict[str, Any], time_ms: int) -> GroupSample:
    """One sample of a group from its XINFO GROUPS row, plus its pending owners."""
    group = text(info["name"])
    last = text(info["last-delivered-id"])
    lag = int_or_none(info.get("lag"))
    source = "redis"
    if lag is None:  # Redis cannot tell after some deletions or XSETID: count what is left
        lag = await _count_after(client, stream, last)
        source = "counted" if lag is not None else "unknown"
    summary = await client.xpending(stream, group)
    return GroupSample(
        stream=stream,
        group=group,
        consumers=int(info["consumers"]),
        pending=int(info["pending"]),
        last_delivered_id=last,
        entries_read=int_or_none(info.get("entries-read")),
        lag=lag,
        lag_source=source,
        lowest_pending_id=text(summary["min"]) if summary["min"] is not None else None,
        owners={text(c["name"]): int(c["pending"]) for c in summary["consumers"]},
        time_ms=time_ms,
    )


async def sample_groups(client: Redis, streams: Iterable[str], group: str | None = None) -> list[GroupSample]:
    """A sample of every group of ``streams`` (only ``group`` if given); streams that do not
    exist are left out."""
    now_ms = await server_ms(client)
    samples = []
    for stream in dict.fromkeys(streams):
        infos = await groups_of(client, stream)
        for info in infos or []:
            if group is None or text(info["name"]) == group:
                samples.append(await sample_group(client, stream, info, now_ms))
    return samples


def judge(
    first: GroupSample | None, last: GroupSample, *, stuck: int, orphaned: list[str],
) -> tuple[list[str], list[str]]:
    """The verdicts that apply (most severe first, ``[OK]`` if none) and why, from the last
    sample, the sample before it (None if there is none), the count of entries idle past
    claim-idle + claim-interval and the dead consumers that own pending entries."""
    found: dict[str, str] = {}
    if stuck:
        found[STUCK] = f"{stuck} pending entries idle past claim-idle + claim-interval: nobody reclaims them"
    if first is not None and last.lag and first.lag and (
        first.last_delivered_id == last.last_delivered_id
        and first.entries_read == last.entries_read
        and first.pending == last.pending
    ):
        seconds = (last.time_ms - first.time_ms) / 1000
        found[STALLED] = f"lag {last.lag} and nothing delivered or acked in {seconds:.1f}s"
    if orphaned:
        found[ORPHANED] = f"pending entries owned by consumers without a heartbeat: {', '.join(orphaned)}"
    if (first is not None and first.lag is not None and last.lag is not None
            and last.lag > first.lag):
        found[BEHIND] = f"lag grew from {first.lag} to {last.lag}"
    if not found:
        return [OK], []
    verdicts = [v for v in SEVERITY if v in found]
    return verdicts, [found[v] for v in verdicts]


async def assess(
    client: Redis, cfg: Config, registry: Registry, last: GroupSample, first: GroupSample | None,
) -> GroupHealth:
    """The health of one group from its last sample and the one before it (if any)."""
    stream, group = last.stream, last.group
    # The daemons' own settings, from their heartbeats; this host's config only if none says.
    threshold = registry.stuck_after(stream, group) or stuck_after(cfg, stream, group)
    dead = dead_letter_of(cfg, stream, group)
    async with client.pipeline(transaction=False) as pipe:
        pipe.xpending_range(stream, group, min="-", max="+", count=STUCK_COUNT_LIMIT,
                            idle=round(threshold * 1000))
        pipe.xlen(dead)
        stuck_rows, dead_letters = await pipe.execute(raise_on_error=False)
    if isinstance(stuck_rows, Exception):  # the group went away between the two calls
        stuck_rows = []
    if isinstance(dead_letters, Exception):  # not a stream: not ours to count
        dead_letters = 0
    orphaned = sorted(c for c, n in last.owners.items() if n and not registry.alive(c))
    verdicts, reasons = judge(first, last, stuck=len(stuck_rows), orphaned=orphaned)
    lag_change = None
    if first is not None and first.lag is not None and last.lag is not None:
        lag_change = last.lag - first.lag
    return GroupHealth(
        stream=stream,
        group=group,
        consumers=last.consumers,
        pending=last.pending,
        last_delivered_id=last.last_delivered_id,
        entries_read=last.entries_read,
        lag=last.lag,
        lag_source=last.lag_source,
        lag_change=lag_change,
        oldest_pending_age_seconds=age_of(last.time_ms, last.lowest_pending_id),
        stuck_pending=len(stuck_rows),
        stuck_after_seconds=threshold,
        orphaned_pending=sum(last.owners[c] for c in orphaned),
        orphaned_consumers=orphaned,
        dead_letter=dead,
        dead_letters=int(dead_letters),
        sampled_seconds=None if first is None else (last.time_ms - first.time_ms) / 1000,
        verdict=verdicts[0],
        verdicts=verdicts,
        reasons=reasons,
    )


async def known_streams(client: Redis, cfg: Config, registry: Registry) -> list[str]:
    """Streams a live daemon reads (registry) plus the config's; if neither names one, every
    key of type stream on the server (SCAN TYPE stream)."""
    names = [s for s, _ in registry.streams()] + [s.stream for s in cfg.streams]
    if not names:
        names = sorted({text(k) async for k in client.scan_iter(count=SCAN_COUNT, _type="stream")})
    return list(dict.fromkeys(names))


Samples = dict[tuple[str, str], GroupSample]


class GroupsWatch:
    """Group health over time: each ``report`` compares with the samples of the previous call.

    The first call takes two samples ``sample_seconds`` apart (none when 0), so that STALLED
    and BEHIND are meaningful from the start.
    """

    def __init__(self, cfg: Config, stream: str | None = None, group: str | None = None,
                 sample_seconds: float = 1.0) -> None:
        self.cfg = cfg
        self.stream = stream
        self.group = group
        self.sample_seconds = sample_seconds
        self.previous: Samples | None = None

    async def _sample(self, client: Redis, registry: Registry) -> Samples:
        streams = [self.stream] if self.stream else await known_streams(client, self.cfg, registry)
        if self.stream and await groups_of(client, self.stream) is None:
            raise NotFound(f"no stream {self.stream!r}")
        return {(s.stream, s.group): s for s in await sample_groups(client, streams, self.group)}

    async def report(self, client: Redis) -> tuple[Registry, list[GroupHealth]]:
        """The registry read for this report and the health of every group, sorted."""
        prefix = key_prefix(self.cfg)
        if self.previous is None and self.sample_seconds > 0:
            self.previous = await self._sample(client, await read_registry(client, prefix))
            await anyio.sleep(self.sample_seconds)
        registry = await read_registry(client, prefix)
        current = await self._sample(client, registry)
        previous = self.previous or {}
        self.previous = current
        healths = [await assess(client, self.cfg, registry, s, previous.get(key))
                   for key, s in sorted(current.items())]
        return registry, healths


async def groups_report(client: Redis, watch: GroupsWatch) -> GroupsReport:
    _, healths = await watch.report(client)
    return GroupsReport(groups=healths, healthy=all(h.verdict == OK for h in healths))


async def status_report(client: Redis, watch: GroupsWatch) -> StatusReport:
    """The fleet: every live daemon, then every group of the known streams with its verdict."""
    registry, healths = await watch.report(client)
    daemons = list(registry.daemons.values())
    healthy = (all(d.ready and not d.degraded for d in daemons)
               and all(h.verdict == OK for h in healths))
    return StatusReport(daemons=daemons, groups=healths, healthy=healthy)
