"""Group health: samples of each group, the verdicts two samples give, the groups and status
reports.

Group verdicts, most severe first (``verdict`` is the first that applies; ``verdicts`` all):

- ``STUCK``: pending entries idle longer than claim-idle + claim-interval of that stream (config,
  else 60s + 5s): a live edged daemon would have reclaimed or leased them by then.
- ``STALLED``: lag > 0 in both samples and neither the last-delivered id, entries-read nor the
  pending count moved between them.
- ``ORPHANED``: a consumer owns pending entries and has no live heartbeat record.
- ``RETENTION-BLOCKED``: the stream has ``retention`` or ``max-len`` and this group holds the
  trim back: the rule wants entries gone that it has not read, or has pending (lua/trim.lua,
  probed without trimming). Below ORPHANED and STALLED, which are often its cause; above BEHIND.
- ``BEHIND``: the lag grew between the two samples.
- ``OK``: none of these.

STALLED and BEHIND compare two samples of the group; without a second sample they are not
given (``sampled_seconds`` is None).

Each physical stream is sampled and judged on its own. The shards of a sharded logical stream
of the config are then summed into one row per logical stream and group (unless asked for the
detail), whose verdicts are all those of its shards, the worst first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio
import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

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
from edged.admin.retention import blocked_by
from edged.admin.shards import max_id, places, resolve
from edged.admin.streams import StreamInfo, stream_info
from edged.config import Config
from edged.layout import key_prefix, physical_streams
from edged.replies import int_or_none, text
from edged.scripts import TrimResult

OK = "OK"
BEHIND = "BEHIND"
STALLED = "STALLED"
STUCK = "STUCK"
ORPHANED = "ORPHANED"
RETENTION_BLOCKED = "RETENTION-BLOCKED"
SEVERITY = (STUCK, STALLED, ORPHANED, RETENTION_BLOCKED, BEHIND)
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


# omit_defaults: the fields only sharded streams have stay out of the JSON of the others.
class GroupHealth(msgspec.Struct, frozen=True, omit_defaults=True):
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
    dead_letter: str | None
    """None for a sharded logical stream whose shards have dead-letter streams of their own."""
    dead_letters: int
    sampled_seconds: float | None
    """Time between the two samples compared; None when only one was taken."""
    verdict: str
    verdicts: list[str]
    reasons: list[str]
    logical: str | None = None
    """A shard's row: the sharded logical stream of the config it belongs to."""
    shard: int | None = None
    """A shard's row: its index in ``logical``."""
    shards: list[GroupHealth] | None = None
    """A logical stream's row: its shards' own rows, which this one sums."""


class GroupsReport(msgspec.Struct, frozen=True, omit_defaults=True):
    groups: list[GroupHealth]
    healthy: bool
    """Every verdict is OK."""
    streams: list[StreamInfo] = []
    """With --all: each stream's length, first and last id, memory."""


class StatusReport(msgspec.Struct, frozen=True, omit_defaults=True):
    daemons: list[DaemonRecord]
    groups: list[GroupHealth]
    healthy: bool
    """Every daemon ready and every verdict OK."""
    streams: list[StreamInfo] = []
    """With --all: each stream's length, first and last id, memory."""


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
    blocked: TrimResult | None = None,
) -> tuple[list[str], list[str]]:
    """The verdicts that apply (most severe first, ``[OK]`` if none) and why, from the last
    sample, the sample before it (None if there is none), the count of entries idle past
    claim-idle + claim-interval, the dead consumers that own pending entries and the stream's
    retention probe when this group blocks it."""
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
    if blocked is not None:
        found[RETENTION_BLOCKED] = (
            f"holds back trimming: it still needs {blocked.floor} (not read or pending), and "
            f"entry {blocked.held_id} is kept {blocked.past_seconds:.0f}s past retention")
    if not found:
        return [OK], []
    verdicts = [v for v in SEVERITY if v in found]
    return verdicts, [found[v] for v in verdicts]


async def assess(
    client: Redis, cfg: Config, registry: Registry, last: GroupSample, first: GroupSample | None,
    blocked: TrimResult | None = None,
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
    if blocked is not None and blocked.holder != group:
        blocked = None
    verdicts, reasons = judge(first, last, stuck=len(stuck_rows), orphaned=orphaned,
                              blocked=blocked)
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


async def known_streams(client: Redis, cfg: Config, registry: Registry,
                        every: bool = False) -> list[str]:
    """Physical streams a live daemon reads (registry) plus the config's (every shard); if
    neither names one, or ``every`` asks, every key of type stream too (SCAN TYPE stream; on a
    cluster, through the cluster client, which scans every primary): a group no live daemon
    and no config names is where orphaned entries hide."""
    names = [s for s, _ in registry.streams()] + [p.cfg.stream for p in physical_streams(cfg)]
    if every or not names:
        names += sorted({text(k) async for k in client.scan_iter(count=SCAN_COUNT,
                                                                   _type="stream")})
    return list(dict.fromkeys(names))


Samples = dict[tuple[str, str], GroupSample]


class GroupsWatch:
    """Group health over time: each ``report`` compares with the samples of the previous call.

    The first call takes two samples ``sample_seconds`` apart (none when 0), so that STALLED
    and BEHIND are meaningful from the start. ``stream`` may name a sharded logical stream of
    the config (all its shards are sampled); its shards are summed into one row per logical
    stream and group unless ``detail`` asks for one row per shard.
    """

    def __init__(self, cfg: Config, stream: str | None = None, group: str | None = None,
                 sample_seconds: float = 1.0, detail: bool = False, every: bool = False) -> None:
        self.cfg = cfg
        self.every = every
        self.stream = stream
        self.group = group
        self.sample_seconds = sample_seconds
        self.detail = detail
        self.target = resolve(cfg, stream, group) if stream else None
        self.places = places(cfg)
        self.previous: Samples | None = None

    async def _streams(self, client: Redis, registry: Registry) -> list[str]:
        if self.target is None:
            return await known_streams(client, self.cfg, registry, self.every)
        names = [s.stream for s in self.target.shards] or [self.target.stream]
        if all([await groups_of(client, name) is None for name in names]):
            raise NotFound(f"no stream {self.target.stream!r}")
        return names

    async def _sample(self, client: Redis, registry: Registry) -> Samples:
        streams = await self._streams(client, registry)
        return {(s.stream, s.group): s for s in await sample_groups(client, streams, self.group)}

    async def report(self, client: Redis) -> tuple[Registry, list[GroupHealth]]:
        """The registry read for this report and the rows of the report, sorted."""
        prefix = key_prefix(self.cfg)
        if self.previous is None and self.sample_seconds > 0:
            self.previous = await self._sample(client, await read_registry(client, prefix))
            await anyio.sleep(self.sample_seconds)
        registry = await read_registry(client, prefix)
        current = await self._sample(client, registry)
        previous = self.previous or {}
        self.previous = current
        probes = {stream: await blocked_by(client, self.cfg, stream)
                  for stream in dict.fromkeys(s.stream for s in current.values())}
        healths = [self._placed(await assess(client, self.cfg, registry, s, previous.get(key),
                                             probes[s.stream]))
                   for key, s in current.items()]
        if self.detail or (self.target is not None and not self.target.sharded):
            # One row per physical stream: also when one shard was asked for by its own name.
            return registry, sorted(healths, key=_row_order)
        return registry, await sum_shards(client, healths)

    def _placed(self, health: GroupHealth) -> GroupHealth:
        """A shard's row says which logical stream it belongs to, and its index there."""
        place = self.places.get((health.stream, health.group))
        if place is None:
            return health
        return msgspec.structs.replace(health, logical=place.logical, shard=place.index)


def _row_order(h: GroupHealth) -> tuple[str, str, int]:
    # Shards by index: "t:10:3" sorts before "t:2:1" as text.
    return (h.logical or h.stream, h.group, h.shard or 0)


async def sum_shards(client: Redis, rows: list[GroupHealth]) -> list[GroupHealth]:
    """One row per logical stream and group: shard rows (``logical`` set) summed, with the
    shards' rows in ``shards``; the other rows as they are. Sorted by stream and group."""
    out: list[GroupHealth] = []
    by_logical: dict[tuple[str, str], list[GroupHealth]] = {}
    for h in rows:
        if h.logical is None:
            out.append(h)
        else:
            by_logical.setdefault((h.logical, h.group), []).append(h)
    for (logical, group), shards in by_logical.items():
        shards.sort(key=_row_order)
        out.append(summed(logical, group, shards, await _distinct_consumers(client, shards)))
    return sorted(out, key=lambda h: (h.stream, h.group))


async def _distinct_consumers(client: Redis, shards: list[GroupHealth]) -> int:
    """How many consumer names the shards' groups have together (one daemon reads every
    shard, so the shards' counts must not be added). One XINFO CONSUMERS per shard."""
    names: set[str] = set()
    for h in shards:
        try:
            names |= {text(c["name"]) for c in await client.xinfo_consumers(h.stream, h.group)}
        except ResponseError:  # the group went away since it was sampled
            continue
    return len(names) or max(h.consumers for h in shards)


def _total(values: list[int | None]) -> int | None:
    """The sum, or None if any shard's value is unknown."""
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _known_total(values: list[int | None]) -> int | None:
    """The sum of the values known, None if none is (a shard never read has no entries-read)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _most(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _lag_source(shards: list[GroupHealth]) -> str:
    sources = {h.lag_source for h in shards}
    return next((s for s in ("unknown", "counted") if s in sources), "redis")


def _worst(shards: list[GroupHealth]) -> tuple[list[str], list[str]]:
    """Every verdict of the shards, most severe first, each with its shards' reasons (shards
    that give the same reason named together)."""
    found = {v for h in shards for v in h.verdicts if v != OK}
    if not found:
        return [OK], []
    verdicts = [v for v in SEVERITY if v in found]
    return verdicts, [_reason(shards, v) for v in verdicts]


def _reason(shards: list[GroupHealth], verdict: str) -> str:
    said: dict[str, list[str]] = {}
    for h in shards:
        for v, reason in zip(h.verdicts, h.reasons, strict=False):
            if v == verdict:
                said.setdefault(reason, []).append(str(h.shard))
    return "; ".join(f"shard{'s' if len(who) > 1 else ''} {', '.join(who)}: {reason}"
                     for reason, who in said.items())


def summed(logical: str, group: str, shards: list[GroupHealth], consumers: int) -> GroupHealth:
    """The row of a logical stream from its shards' rows: counts, lag (unknown if a shard's
    is) and dead letters added, the oldest pending age and the STUCK threshold their largest,
    the last-delivered id the highest, ``consumers`` the distinct names; the verdicts are the
    shards' (worst first)."""
    dead = {h.dead_letter for h in shards}
    verdicts, reasons = _worst(shards)
    return GroupHealth(
        stream=logical,
        group=group,
        consumers=consumers,
        pending=sum(h.pending for h in shards),
        last_delivered_id=max_id(h.last_delivered_id for h in shards) or "0-0",
        entries_read=_known_total([h.entries_read for h in shards]),
        lag=_total([h.lag for h in shards]),
        lag_source=_lag_source(shards),
        lag_change=_total([h.lag_change for h in shards]),
        oldest_pending_age_seconds=_most([h.oldest_pending_age_seconds for h in shards]),
        stuck_pending=sum(h.stuck_pending for h in shards),
        stuck_after_seconds=max(h.stuck_after_seconds for h in shards),
        orphaned_pending=sum(h.orphaned_pending for h in shards),
        orphaned_consumers=sorted({c for h in shards for c in h.orphaned_consumers}),
        dead_letter=dead.pop() if len(dead) == 1 else None,
        dead_letters=sum(h.dead_letters for h in shards),
        sampled_seconds=_most([h.sampled_seconds for h in shards]),
        verdict=verdicts[0],
        verdicts=verdicts,
        reasons=reasons,
        shards=shards,
    )


async def groups_report(client: Redis, watch: GroupsWatch) -> GroupsReport:
    _, healths = await watch.report(client)
    return GroupsReport(groups=healths, healthy=all(h.verdict == OK for h in healths),
                        streams=await _stream_info(client, watch, healths))


async def _stream_info(client: Redis, watch: GroupsWatch,
                       healths: list[GroupHealth]) -> list[StreamInfo]:
    if not watch.every:
        return []
    return await stream_info(client, [h.stream for h in healths])


async def status_report(client: Redis, watch: GroupsWatch) -> StatusReport:
    """The fleet: every live daemon, then every group of the known streams with its verdict."""
    registry, healths = await watch.report(client)
    daemons = list(registry.daemons.values())
    healthy = (all(d.ready and not d.degraded for d in daemons)
               and all(h.verdict == OK for h in healths))
    return StatusReport(daemons=daemons, groups=healths, healthy=healthy,
                        streams=await _stream_info(client, watch, healths))
