"""Pending entries of a group (XPENDING), and the group's consumers (XINFO CONSUMERS), each
with its daemon's liveness from the heartbeat registry."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from edged.admin.lookup import PAGE, age_of, nogroup_error, server_ms
from edged.admin.registry import Registry
from edged.replies import int_or_none, text


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
