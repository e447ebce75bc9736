"""Managing consumer groups, as `kafka-consumer-groups` does for Kafka: create a group at an
id, move its last-delivered id, delete it, delete a consumer.

Each change first says what it would do (``dry_run``): how many entries a move would deliver
again or skip, how many are pending. A group a live daemon reads is not moved or deleted
without ``force``: the daemon would go on reading from where it was, or create the group again
at its start-id. A consumer is deleted only when it owns nothing; with ``force`` its pending
entries are first handed back (claimed, looking idle for a day, by a placeholder consumer), so
that any live daemon reclaims them at once: XGROUP DELCONSUMER alone would drop them from the
group, never to be delivered again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from edged.admin.lookup import NotFound, groups_of
from edged.admin.registry import Registry
from edged.durations import Duration
from edged.errors import EdgedError, UsageError
from edged.ids import MAX_SEQ, is_range_id
from edged.replies import text
from edged.scripts import RELEASE_IDLE_MS

COUNT_CAP = 100_000  # entries counted for a dry run; past it: "at least"
HANDED_BACK_TO = "edged-handed-back"


class Refused(EdgedError):
    """The change would hurt something live; the message says what and how to go on."""


class GroupChange(msgspec.Struct, frozen=True, omit_defaults=True):
    stream: str
    group: str
    action: str
    done: bool
    last_delivered_before: str | None = None
    last_delivered_after: str | None = None
    pending: int = 0
    delivered_again: int | None = None
    """Entries a move back will deliver again (at most COUNT_CAP counted)."""
    skipped: int | None = None
    """Entries a move forward skips: this group will never get them."""


class ConsumerDeletion(msgspec.Struct, frozen=True):
    stream: str
    group: str
    consumer: str
    pending: int
    handed_back: list[str]
    """Ids handed back to the group (claimed by HANDED_BACK_TO, idle for a day)."""


def _group_info(groups: list[dict[str, Any]] | None, group: str) -> dict[str, Any] | None:
    return next((g for g in groups or [] if text(g.get("name")) == group), None)


def _readers(registry: Registry, stream: str, group: str) -> list[str]:
    return [d.consumer for d in registry.daemons.values() if f"{stream}/{group}" in d.streams]


def _refuse_if_read(registry: Registry, stream: str, group: str, force: bool, what: str) -> None:
    readers = _readers(registry, stream, group)
    if readers and not force:
        raise Refused(f"{stream} group {group} is read by live daemon(s) {', '.join(readers)}: "
                      f"{what} under them would surprise them; stop them first, or --force")


async def _count(client: Redis, stream: str, low: str, high: str) -> int:
    """Entries with low < id <= high, counted up to COUNT_CAP."""
    if low == high:
        return 0
    return len(await client.xrange(stream, f"({low}", high, count=COUNT_CAP) or [])


async def target_id(client: Redis, to_id: str | None, to_time: str | None,
                    to_end: bool) -> str:
    """The last-delivered id a move sets, from exactly one of its three forms."""
    if sum(x is not None and x is not False for x in (to_id, to_time, to_end or None)) != 1:
        raise UsageError("give one of --to-id, --to-time, --to-end")
    if to_end:
        return "$"
    if to_id is not None:
        if to_id != "0" and not is_range_id(to_id):
            raise UsageError(f"--to-id {to_id!r}: not an entry id (like 1712345678901-0)")
        return to_id
    assert to_time is not None
    ms = await _time_ms(client, to_time)
    # Entries from that time on are delivered: the last-delivered id is the one just before.
    return "0-0" if ms <= 0 else f"{ms - 1}-{MAX_SEQ}"


async def _time_ms(client: Redis, when: str) -> int:
    """An ISO 8601 time (``2026-11-30T12:00:00Z``) or a duration ago (``2h``), in ms."""
    try:
        ago = Duration.parse(when)
    except ValueError:
        pass
    else:
        seconds, micros = await client.time()  # the server's clock: ids come from it
        return int((seconds + micros / 1e6 - ago.seconds) * 1000)
    try:
        moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--to-time {when!r}: give an ISO 8601 time (2026-11-30T12:00:00Z) or "
                         "a duration ago (2h)") from None
    if moment.tzinfo is None:
        raise UsageError(f"--to-time {when!r}: say the time zone (Z or +01:00)")
    return int(moment.timestamp() * 1000)


async def create_group(client: Redis, streams: list[str], group: str, start_id: str,
                       dry_run: bool = False) -> list[GroupChange]:
    """XGROUP CREATE ... MKSTREAM on each stream; a group that exists is refused, untouched."""
    changes = []
    for stream in streams:
        if _group_info(await groups_of(client, stream), group) is not None:
            raise Refused(f"{stream} already has a group {group}: move it with group set-id")
        if not dry_run:
            await client.xgroup_create(stream, group, id=start_id, mkstream=True)
        changes.append(GroupChange(stream, group, "create", done=not dry_run,
                                   last_delivered_after=start_id))
    return changes


async def set_group_id(client: Redis, streams: list[str], group: str, to: str,
                       registry: Registry, dry_run: bool, force: bool = False,
                       ) -> list[GroupChange]:
    """XGROUP SETID on each stream, saying how many entries are delivered again or skipped.

    Pending entries stay pending: the move changes only what is read next.
    """
    planned = []
    for stream in streams:
        info = _group_info(await groups_of(client, stream), group)
        if info is None:
            raise NotFound(f"no group {group} on {stream}")
        _refuse_if_read(registry, stream, group, force, "moving the group")
        before = text(info.get("last-delivered-id"))
        after = to
        if to == "$":
            last = await client.xrevrange(stream, count=1)
            after = text(last[0][0]) if last else "0-0"
        back, ahead = sorted((before, after), key=_id_order)
        count = await _count(client, stream, back, ahead)
        moving_back = _id_order(after) < _id_order(before)
        planned.append(GroupChange(
            stream, group, "set-id", done=False, last_delivered_before=before,
            last_delivered_after=after, pending=int(info.get("pending") or 0),
            delivered_again=count if moving_back else 0,
            skipped=0 if moving_back else count))
    if dry_run:
        return planned
    for change in planned:
        await client.xgroup_setid(change.stream, group, change.last_delivered_after or to)
    return [msgspec.structs.replace(c, done=True) for c in planned]


async def delete_group(client: Redis, streams: list[str], group: str, registry: Registry,
                       dry_run: bool, force: bool = False) -> list[GroupChange]:
    """XGROUP DESTROY on each stream; its pending entries go with it (said first)."""
    planned = []
    for stream in streams:
        info = _group_info(await groups_of(client, stream), group)
        if info is None:
            raise NotFound(f"no group {group} on {stream}")
        _refuse_if_read(registry, stream, group, force,
                        "deleting the group (the daemon would create it again at its start-id)")
        planned.append(GroupChange(stream, group, "delete", done=False,
                                   last_delivered_before=text(info.get("last-delivered-id")),
                                   pending=int(info.get("pending") or 0)))
    if dry_run:
        return planned
    for change in planned:
        await client.xgroup_destroy(change.stream, group)
    return [msgspec.structs.replace(c, done=True) for c in planned]


async def delete_consumer(client: Redis, stream: str, group: str, consumer: str,
                          registry: Registry, force: bool = False) -> ConsumerDeletion:
    """XGROUP DELCONSUMER, only for a consumer that owns nothing (or, with ``force``, after
    handing its entries back) and that no live daemon is."""
    if consumer in registry.daemons and not force:
        raise Refused(f"consumer {consumer} is a live daemon (it beats): it would come back at "
                      "its next read; stop it first, or --force")
    try:
        rows = await client.xinfo_consumers(stream, group)
    except ResponseError as exc:
        raise NotFound(f"no group {group} on {stream} ({exc})") from None
    row = next((r for r in rows if text(r.get("name")) == consumer), None)
    if row is None:
        raise NotFound(f"{stream} group {group} has no consumer {consumer}")
    pending = int(row.get("pending") or 0)
    if pending and not force:
        raise Refused(f"consumer {consumer} owns {pending} pending entries; deleting it would "
                      "drop them from the group for good: --force hands them back first")
    handed: list[str] = []
    while True:  # XPENDING per consumer, a page at a time, each page claimed as released
        page = await client.xpending_range(stream, group, "-", "+", 500, consumername=consumer)
        if not page:
            break
        ids: list[Any] = [text(p["message_id"]) for p in page]
        await client.xclaim(stream, group, HANDED_BACK_TO, 0, ids, idle=RELEASE_IDLE_MS,
                            justid=True)
        handed += [str(i) for i in ids]
    await client.xgroup_delconsumer(stream, group, consumer)
    return ConsumerDeletion(stream, group, consumer, pending, handed)


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)

