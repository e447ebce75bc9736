"""Pending entries of a group (XPENDING), and the group's consumers (XINFO CONSUMERS), each
with its daemon's liveness from the heartbeat registry.

Over a sharded logical stream (shards.py) each shard is asked on its own (one key per command,
so it works on a cluster) and the answers are summed; the per-shard answers go along.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from edged.admin.lookup import PAGE, NotFound, age_of, nogroup_error, server_ms
from edged.admin.registry import Registry
from edged.admin.shards import Shard, Target, max_id, min_id, page_end
from edged.ids import id_key
from edged.replies import int_or_none, text

T = TypeVar("T")


class ConsumerPending(msgspec.Struct, frozen=True):
    consumer: str
    pending: int
    idle_seconds: float | None
    """Since the consumer's last attempted interaction (XINFO CONSUMERS ``idle``)."""
    alive: bool
    host: str | None


# omit_defaults: the fields that only sharded streams have stay out of the JSON of the others.
class PendingSummary(msgspec.Struct, frozen=True, omit_defaults=True):
    stream: str
    group: str
    pending: int
    lowest_id: str | None
    highest_id: str | None
    oldest_age_seconds: float | None
    """Age of the lowest pending id (since it was added to the stream)."""
    consumers: list[ConsumerPending]
    """Consumers that own pending entries, most pending first."""
    shard: int | None = None
    """In ``shards``: this shard's index (``stream`` is the shard's own name)."""
    shards: list[PendingSummary] | None = None
    """A sharded logical stream: each shard's own summary, the above being their sum."""


class PendingEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    consumer: str
    idle_seconds: float
    """Since it was last delivered (or claimed, or its lease renewed)."""
    deliveries: int
    age_seconds: float
    """Since it was added to the stream (from the id)."""
    stream: str | None = None
    """Over a sharded logical stream: the shard the entry is pending in."""
    shard: int | None = None


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


class ConsumersReport(msgspec.Struct, frozen=True, omit_defaults=True):
    stream: str
    group: str
    consumers: list[Consumer]
    shard: int | None = None
    """In ``shards``: this shard's index (``stream`` is the shard's own name)."""
    shards: list[ConsumersReport] | None = None
    """A sharded logical stream: each shard's consumers; the above sums them per name."""


async def pending_summary(client: Redis, registry: Registry, stream: str, group: str) -> PendingSummary:
    """XPENDING's summary of the group, each owner with its idle time, liveness and host."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.xpending(stream, group)
            pipe.xinfo_consumers(stream, group)
            summary, infos = await pipe.execute()
    except ResponseError as exc:
        raise nogroup_error(exc, stream, group) from None
    idle = {text(c["name"]): int(c["idle"]) / 1000 for c in infos}
    lowest = text(summary["min"]) if summary["min"] is not None else None
    owners = sorted(summary["consumers"], key=lambda c: (-int(c["pending"]), text(c["name"])))
    return PendingSummary(
        stream=stream,
        group=group,
        pending=int(summary["pending"]),
        lowest_id=lowest,
        highest_id=text(summary["max"]) if summary["max"] is not None else None,
        oldest_age_seconds=age_of(registry.now_ms, lowest),
        consumers=[
            ConsumerPending(
                consumer=(name := text(c["name"])),
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
            raise nogroup_error(exc, stream, group) from None
        for row in rows:
            deliveries = int(row["times_delivered"])
            if min_deliveries is not None and deliveries < min_deliveries:
                continue
            entry_id = text(row["message_id"])
            found.append(PendingEntry(
                id=entry_id,
                consumer=text(row["consumer"]),
                idle_seconds=int(row["time_since_delivered"]) / 1000,
                deliveries=deliveries,
                age_seconds=age_of(now_ms, entry_id) or 0.0,
            ))
        if len(rows) < batch:
            break
        start = f"({text(rows[-1]['message_id'])}"
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
        raise nogroup_error(exc, stream, group) from None
    rows = []
    for c in infos:
        name = text(c["name"])
        inactive = int_or_none(c.get("inactive"))
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


# --------------------------------------------------------------------------- sharded streams


async def _per_shard(target: Target, group: str,
                     ask: Callable[[Shard], Awaitable[T]]) -> list[tuple[Shard, T]]:
    """``ask`` each shard of ``target``, one after the other (each asks one key). A shard
    without the group (no daemon has read it yet) is left out; NotFound only if none has it."""
    found: list[tuple[Shard, T]] = []
    for shard in target.shards:
        try:
            found.append((shard, await ask(shard)))
        except NotFound:
            continue
    if not found:
        raise NotFound(f"no group {group!r} on any shard of {target.stream!r}")
    return found


def _least(values: list[float | None]) -> float | None:
    """The smallest known value: a consumer's idle time over shards is since its latest act."""
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _by_name(rows: list[tuple[str, T]]) -> dict[str, list[T]]:
    grouped: dict[str, list[T]] = {}
    for name, row in rows:
        grouped.setdefault(name, []).append(row)
    return grouped


async def pending_summary_for(client: Redis, registry: Registry, target: Target,
                              group: str) -> PendingSummary:
    """The summary of ``group`` on ``target``: over a sharded logical stream, the sum of its
    shards' summaries (lowest and highest id over all shards, each consumer's entries added
    up) with each shard's own in ``shards``."""
    if not target.sharded:
        return await pending_summary(client, registry, target.stream, group)
    answers = await _per_shard(target, group,
                               lambda shard: pending_summary(client, registry, shard.stream, group))
    parts = [msgspec.structs.replace(s, shard=shard.index) for shard, s in answers]
    owners = _by_name([(c.consumer, c) for p in parts for c in p.consumers])
    summed = [ConsumerPending(consumer=name, pending=sum(c.pending for c in cs),
                              idle_seconds=_least([c.idle_seconds for c in cs]),
                              alive=cs[0].alive, host=cs[0].host)
              for name, cs in owners.items()]
    lowest = min_id(p.lowest_id for p in parts)
    return PendingSummary(
        stream=target.stream,
        group=group,
        pending=sum(p.pending for p in parts),
        lowest_id=lowest,
        highest_id=max_id(p.highest_id for p in parts),
        oldest_age_seconds=age_of(registry.now_ms, lowest),
        consumers=sorted(summed, key=lambda c: (-c.pending, c.consumer)),
        shards=parts,
    )


async def pending_entries_for(
    client: Redis,
    target: Target,
    group: str,
    *,
    count: int = 50,
    after: str | None = None,
    min_idle: float | None = None,
    consumer: str | None = None,
    min_deliveries: int | None = None,
) -> PendingPage:
    """``pending_entries`` of ``target``; over a sharded logical stream, the shards' entries
    merged in id order, each with its shard (``next_after`` pages through all of them)."""

    def page(stream: str) -> Awaitable[PendingPage]:
        return pending_entries(client, stream, group, count=count, after=after, min_idle=min_idle,
                               consumer=consumer, min_deliveries=min_deliveries)

    if not target.sharded:
        return await page(target.stream)
    pages = await _per_shard(target, group, lambda shard: page(shard.stream))
    merged = sorted(((e, shard) for shard, p in pages for e in p.entries),
                    key=lambda pair: (id_key(pair[0].id), pair[1].index))
    end = page_end([e.id for e, _ in merged], count)
    entries = [msgspec.structs.replace(e, stream=shard.stream, shard=shard.index)
               for e, shard in merged[:end]]
    more = end < len(merged) or any(p.next_after is not None for _, p in pages)
    return PendingPage(stream=target.stream, group=group, entries=entries,
                       next_after=entries[-1].id if more and entries else None)


async def consumers_for(client: Redis, registry: Registry, target: Target,
                        group: str) -> ConsumersReport:
    """The consumers of ``group`` on ``target``; over a sharded logical stream one row per
    consumer name (pending added up, idle and inactive its least over the shards), with each
    shard's own report in ``shards``."""
    if not target.sharded:
        return await consumers(client, registry, target.stream, group)
    answers = await _per_shard(target, group,
                               lambda shard: consumers(client, registry, shard.stream, group))
    parts = [msgspec.structs.replace(r, shard=shard.index) for shard, r in answers]
    rows = [Consumer(consumer=name,
                     pending=sum(c.pending for c in cs),
                     idle_seconds=_least([c.idle_seconds for c in cs]),
                     inactive_seconds=_least([c.inactive_seconds for c in cs]),
                     alive=cs[0].alive, host=cs[0].host, pid=cs[0].pid,
                     last_seen_seconds=cs[0].last_seen_seconds)
            for name, cs in _by_name([(c.consumer, c) for p in parts for c in p.consumers]).items()]
    return ConsumersReport(stream=target.stream, group=group,
                           consumers=sorted(rows, key=lambda c: c.consumer), shards=parts)
