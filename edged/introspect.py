"""Look inside consumer groups: pending entries, groups and their health, consumers, the fleet.

Queries only (plus the two operator actions ``claim`` and ``ack``); they return msgspec
Structs whose field names are the stable ``--json`` output of ``edged pending``, ``groups``,
``consumers``, ``status``, ``claim`` and ``ack`` (see cli_inspect.py and README.md).

Ages of entries come from the millisecond part of their id, measured against the server's
clock (``TIME``), so a skewed operator host does not distort them. A consumer is *alive* while
its heartbeat record ``<prefix>daemon:<consumer>`` exists (heartbeat.py writes it, with a TTL of
three beats).

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

import json
import re
from collections.abc import Iterable
from typing import Any

import anyio
import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from edged.config import Config, StreamConfig
from edged.errors import EdgedError
from edged.keys import daemon_key, daemons_pattern, seen_key

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
SCAN_COUNT = 1000
PAGE = 500


class NotFound(EdgedError):
    """The stream or group asked for does not exist."""


class NotPending(EdgedError):
    """``claim`` was given ids that are not pending in the group; nothing was claimed."""


# --------------------------------------------------------------------------- result structs


class Daemon(msgspec.Struct, frozen=True):
    """One live daemon, from its heartbeat record."""

    consumer: str
    host: str | None
    pid: int | None
    version: str | None
    streams: list[str]
    """``"stream/group"`` pairs it reads."""
    started: float | None
    """Epoch seconds, by the daemon host's clock."""
    uptime_seconds: float | None
    beat_age_seconds: float | None
    ready: bool
    in_flight: int | None
    processed: int | None
    failed: int | None
    dead_lettered: int | None


class ConsumerPending(msgspec.Struct, frozen=True):
    consumer: str
    pending: int
    idle_seconds: float | None
    """Since the consumer's last attempted interaction (XINFO CONSUMERS ``idle``)."""
    alive: bool
    host: str | None


class PendingSummary(msgspec.Struct, frozen=True):
    stream: str
    group: str
    pending: int
    lowest_id: str | None
    highest_id: str | None
    oldest_age_seconds: float | None
    """Age of the lowest pending id (since it was added to the stream)."""
    consumers: list[ConsumerPending]
    """Consumers that own pending entries, most pending first."""


class PendingEntry(msgspec.Struct, frozen=True):
    id: str
    consumer: str
    idle_seconds: float
    """Since it was last delivered (or claimed, or its lease renewed)."""
    deliveries: int
    age_seconds: float
    """Since it was added to the stream (from the id)."""


class PendingPage(msgspec.Struct, frozen=True):
    stream: str
    group: str
    entries: list[PendingEntry]
    next_after: str | None
    """Give this as ``--after`` for the next page; None on the last page."""


class Consumer(msgspec.Struct, frozen=True):
    consumer: str
    pending: int
    idle_seconds: float | None
    inactive_seconds: float | None
    """Since the last successful read or claim; None where the server does not report it
    (Redis < 7.2) or the consumer never read."""
    alive: bool
    host: str | None
    pid: int | None
    last_seen_seconds: float | None
    """Since its daemon's last heartbeat, from ``<prefix>seen``; None if never seen."""


class ConsumersReport(msgspec.Struct, frozen=True):
    stream: str
    group: str
    consumers: list[Consumer]


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
    daemons: list[Daemon]
    groups: list[GroupHealth]
    healthy: bool
    """Every daemon ready and every verdict OK."""


class ClaimResult(msgspec.Struct, frozen=True):
    stream: str
    group: str
    to: str
    claimed: list[str]


class AckResult(msgspec.Struct, frozen=True):
    stream: str
    group: str
    acked: list[str]
    not_pending: list[str]


# --------------------------------------------------------------------------- small helpers


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def id_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def _age(now_ms: int, entry_id: str | None) -> float | None:
    if entry_id is None:
        return None
    return max(now_ms - id_ms(entry_id), 0) / 1000


async def server_ms(client: Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def stream_config(cfg: Config, stream: str, group: str) -> StreamConfig | None:
    for s in cfg.streams:
        if s.stream == stream and s.group == group:
            return s
    return None


def dead_letter_of(cfg: Config, stream: str, group: str) -> str:
    """The group's dead-letter stream: from the config if the pair is there, else ``<stream>:dead``."""
    s = stream_config(cfg, stream, group)
    return s.dead_letter_stream if s is not None else f"{stream}:dead"


def stuck_after(cfg: Config, stream: str, group: str) -> float:
    """Idle time past which a live edged would have reclaimed (or leased) a pending entry."""
    s = stream_config(cfg, stream, group) or StreamConfig(stream=stream, group=group, handler="x:y")
    return s.claim_idle.seconds + s.claim_interval.seconds


def _nogroup(exc: ResponseError, stream: str, group: str | None = None) -> EdgedError:
    message = str(exc)
    if "NOGROUP" in message or "no such key" in message.lower():
        what = f"group {group!r} on stream {stream!r}" if group else f"stream {stream!r}"
        return NotFound(f"no {what}")
    return EdgedError(f"Redis refused: {message}")


# --------------------------------------------------------------------------- the registry


class Registry(msgspec.Struct, frozen=True):
    """The live daemons (by consumer name) and when each consumer last beat."""

    daemons: dict[str, Daemon]
    seen_ms: dict[str, int]
    now_ms: int

    def alive(self, consumer: str) -> bool:
        return consumer in self.daemons

    def host(self, consumer: str) -> str | None:
        d = self.daemons.get(consumer)
        return d.host if d else None

    def last_seen(self, consumer: str) -> float | None:
        ms = self.seen_ms.get(consumer)
        return None if ms is None else max(self.now_ms - ms, 0) / 1000

    def streams(self) -> list[tuple[str, str]]:
        """``(stream, group)`` pairs read by live daemons."""
        pairs: list[tuple[str, str]] = []
        for d in self.daemons.values():
            for item in d.streams:
                stream, sep, group = item.rpartition("/")
                if sep:
                    pairs.append((stream, group))
        return pairs


def _daemon(raw: dict[bytes, bytes], now: float) -> Daemon | None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if "consumer" not in fields:
        return None  # expired between SCAN and HGETALL
    try:
        streams = [str(s) for s in json.loads(fields.get("streams", "[]"))]
    except ValueError:
        streams = []
    started = _float(fields.get("started"))
    beat = _float(fields.get("beat"))
    return Daemon(
        consumer=fields["consumer"],
        host=fields.get("host"),
        pid=_int(fields.get("pid")),
        version=fields.get("version"),
        streams=streams,
        started=started,
        uptime_seconds=None if started is None else max(now - started, 0.0),
        beat_age_seconds=None if beat is None else max(now - beat, 0.0),
        ready=fields.get("ready") == "1",
        in_flight=_int(fields.get("in-flight")),
        processed=_int(fields.get("processed")),
        failed=_int(fields.get("failed")),
        dead_lettered=_int(fields.get("dead-lettered")),
    )


async def read_registry(client: Redis, prefix: str) -> Registry:
    """Every live daemon's heartbeat record under ``prefix``, and the last-seen hash."""
    now_ms = await server_ms(client)
    pattern = daemons_pattern(_glob_escape(prefix))
    keys = [k async for k in client.scan_iter(match=pattern, count=SCAN_COUNT)]
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        pipe.hgetall(seen_key(prefix))
        replies = await pipe.execute()
    daemons: dict[str, Daemon] = {}
    for key, raw in zip(keys, replies[:-1], strict=True):
        d = _daemon(raw or {}, now_ms / 1000)
        if d is not None and daemon_key(prefix, d.consumer) == _text(key):
            daemons[d.consumer] = d
    seen = {_text(k): n for k, v in (replies[-1] or {}).items() if (n := _int(v)) is not None}
    return Registry(daemons=dict(sorted(daemons.items())), seen_ms=seen, now_ms=now_ms)


# --------------------------------------------------------------------------- pending


async def pending_summary(client: Redis, registry: Registry, stream: str, group: str) -> PendingSummary:
    """XPENDING's summary of the group, each owner with its idle time, liveness and host."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.xpending(stream, group)
            pipe.xinfo_consumers(stream, group)
            summary, infos = await pipe.execute()
    except ResponseError as exc:
        raise _nogroup(exc, stream, group) from None
    idle = {_text(c["name"]): int(c["idle"]) / 1000 for c in infos}
    lowest = _text(summary["min"]) if summary["min"] is not None else None
    owners = sorted(summary["consumers"], key=lambda c: (-int(c["pending"]), _text(c["name"])))
    return PendingSummary(
        stream=stream,
        group=group,
        pending=int(summary["pending"]),
        lowest_id=lowest,
        highest_id=_text(summary["max"]) if summary["max"] is not None else None,
        oldest_age_seconds=_age(registry.now_ms, lowest),
        consumers=[
            ConsumerPending(
                consumer=(name := _text(c["name"])),
                pending=int(c["pending"]),
                idle_seconds=idle.get(name),
                alive=registry.alive(name),
                host=registry.host(name),
            )
            for c in owners
        ],
    )


async def pending_entries(
    client: Redis,
    stream: str,
    group: str,
    *,
    count: int = 50,
    after: str | None = None,
    min_idle: float | None = None,
    consumer: str | None = None,
    min_deliveries: int | None = None,
) -> PendingPage:
    """Up to ``count`` pending entries after id ``after`` (exclusive), lowest id first, that are
    idle at least ``min_idle`` seconds, owned by ``consumer`` and delivered at least
    ``min_deliveries`` times (this last filter is applied here, so more pages may be read)."""
    now_ms = await server_ms(client)
    start = f"({after}" if after is not None else "-"
    found: list[PendingEntry] = []
    batch = max(count + 1, PAGE) if min_deliveries else count + 1
    while len(found) <= count:
        try:
            rows = await client.xpending_range(
                stream, group, min=start, max="+", count=batch, consumername=consumer,
                idle=None if min_idle is None else round(min_idle * 1000),
            )
        except ResponseError as exc:
            raise _nogroup(exc, stream, group) from None
        for row in rows:
            deliveries = int(row["times_delivered"])
            if min_deliveries is not None and deliveries < min_deliveries:
                continue
            entry_id = _text(row["message_id"])
            found.append(PendingEntry(
                id=entry_id,
                consumer=_text(row["consumer"]),
                idle_seconds=int(row["time_since_delivered"]) / 1000,
                deliveries=deliveries,
                age_seconds=_age(now_ms, entry_id) or 0.0,
            ))
        if len(rows) < batch:
            break
        start = f"({_text(rows[-1]['message_id'])}"
    entries = found[:count]
    more = len(found) > count
    return PendingPage(stream=stream, group=group, entries=entries,
                       next_after=entries[-1].id if more and entries else None)


# --------------------------------------------------------------------------- consumers


async def consumers(client: Redis, registry: Registry, stream: str, group: str) -> ConsumersReport:
    """Every consumer of the group (XINFO CONSUMERS) with its daemon's liveness, host and pid."""
    try:
        infos = await client.xinfo_consumers(stream, group)
    except ResponseError as exc:
        raise _nogroup(exc, stream, group) from None
    rows = []
    for c in infos:
        name = _text(c["name"])
        inactive = _int(c.get("inactive"))
        d = registry.daemons.get(name)
        rows.append(Consumer(
            consumer=name,
            pending=int(c["pending"]),
            idle_seconds=int(c["idle"]) / 1000,
            inactive_seconds=None if inactive is None or inactive < 0 else inactive / 1000,
            alive=d is not None,
            host=d.host if d else None,
            pid=d.pid if d else None,
            last_seen_seconds=registry.last_seen(name),
        ))
    rows.sort(key=lambda c: c.consumer)
    return ConsumersReport(stream=stream, group=group, consumers=rows)


# --------------------------------------------------------------------------- groups


async def _groups_of(client: Redis, stream: str) -> list[dict[str, Any]] | None:
    """XINFO GROUPS, or None if ``stream`` is not a stream."""
    try:
        return list(await client.xinfo_groups(stream))
    except ResponseError as exc:
        message = str(exc).lower()
        if "no such key" in message or "wrongtype" in message:
            return None
        raise


async def _count_after(client: Redis, stream: str, after: str) -> int | None:
    """Entries in ``stream`` after id ``after``, up to LAG_COUNT_LIMIT; None beyond."""
    n = 0
    start = f"({after}"
    while n <= LAG_COUNT_LIMIT:
        rows = list(await client.xrange(stream, min=start, max="+", count=PAGE) or [])
        n += len(rows)
        if len(rows) < PAGE:
            return n
        start = f"({_text(rows[-1][0])}"
    return None


async def sample_group(client: Redis, stream: str, info: dict[str, Any], time_ms: int) -> GroupSample:
    """One sample of a group from its XINFO GROUPS row, plus its pending owners."""
    group = _text(info["name"])
    last = _text(info["last-delivered-id"])
    lag = _int(info.get("lag"))
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
        entries_read=_int(info.get("entries-read")),
        lag=lag,
        lag_source=source,
        lowest_pending_id=_text(summary["min"]) if summary["min"] is not None else None,
        owners={_text(c["name"]): int(c["pending"]) for c in summary["consumers"]},
        time_ms=time_ms,
    )


async def sample_groups(client: Redis, streams: Iterable[str], group: str | None = None) -> list[GroupSample]:
    """A sample of every group of ``streams`` (only ``group`` if given); streams that do not
    exist are left out."""
    now_ms = await server_ms(client)
    samples = []
    for stream in dict.fromkeys(streams):
        infos = await _groups_of(client, stream)
        for info in infos or []:
            if group is None or _text(info["name"]) == group:
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
    threshold = stuck_after(cfg, stream, group)
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
        oldest_pending_age_seconds=_age(last.time_ms, last.lowest_pending_id),
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
        names = sorted({_text(k) async for k in client.scan_iter(count=SCAN_COUNT, _type="stream")})
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
        if self.stream and await _groups_of(client, self.stream) is None:
            raise NotFound(f"no stream {self.stream!r}")
        return {(s.stream, s.group): s for s in await sample_groups(client, streams, self.group)}

    async def report(self, client: Redis) -> tuple[Registry, list[GroupHealth]]:
        """The registry read for this report and the health of every group, sorted."""
        prefix = self.cfg.daemon.key_prefix
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
    healthy = all(d.ready for d in daemons) and all(h.verdict == OK for h in healths)
    return StatusReport(daemons=daemons, groups=healths, healthy=healthy)


# --------------------------------------------------------------------------- actions

# Both scripts check every id with XPENDING in the same atomic step as the change, so a
# concurrent ack or claim cannot slip between the check and the action.
_CLAIM = """
local missing = {}
for i = 3, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1) == 0 then
    missing[#missing + 1] = ARGV[i]
  end
end
if #missing > 0 then return {0, missing} end
local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], '0'}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
args[#args + 1] = 'JUSTID'
return {1, redis.call(unpack(args))}
"""

_ACK = """
local acked, missing = {}, {}
for i = 2, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1) == 0 then
    missing[#missing + 1] = ARGV[i]
  else
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    acked[#acked + 1] = ARGV[i]
  end
end
return {acked, missing}
"""


async def _group_exists(client: Redis, stream: str, group: str) -> None:
    infos = await _groups_of(client, stream)
    if infos is None:
        raise NotFound(f"no stream {stream!r}")
    if group not in {_text(i["name"]) for i in infos}:
        raise NotFound(f"no group {group!r} on stream {stream!r}")


async def claim(client: Redis, stream: str, group: str, ids: list[str], to: str) -> ClaimResult:
    """Give pending entries ``ids`` to consumer ``to`` (XCLAIM min-idle 0, JUSTID: the delivery
    count is unchanged, the idle time restarts). All or nothing: if any id is not pending,
    nothing is claimed and NotPending names them."""
    await _group_exists(client, stream, group)
    unique = list(dict.fromkeys(ids))
    try:
        ok, result = await client.eval(_CLAIM, 1, stream, group, to, *unique)
    except ResponseError as exc:
        raise _nogroup(exc, stream, group) from None
    if not ok:
        raise NotPending(
            f"not pending in group {group!r} of {stream!r}: {', '.join(_text(i) for i in result)}; "
            "nothing was claimed"
        )
    return ClaimResult(stream=stream, group=group, to=to, claimed=[_text(i) for i in result])


async def ack(client: Redis, stream: str, group: str, ids: list[str]) -> AckResult:
    """XACK the ``ids`` that are pending; the others are reported in ``not_pending``."""
    await _group_exists(client, stream, group)
    unique = list(dict.fromkeys(ids))
    try:
        acked, missing = await client.eval(_ACK, 1, stream, group, *unique)
    except ResponseError as exc:
        raise _nogroup(exc, stream, group) from None
    return AckResult(stream=stream, group=group, acked=[_text(i) for i in acked],
                     not_pending=[_text(i) for i in missing])
