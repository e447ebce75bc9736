"""Dead-letter streams: list, show, replay and purge the entries edged moved there.

A dead-letter entry is the original entry's fields plus the metadata that the consumer added
(``edged-reason``, ``edged-stream``, ``edged-group``, ``edged-id``, ``edged-consumer``,
``edged-failed-at``, ``edged-deliveries``; see consume/outcomes.py and lua/dead_letter.lua). Replay
strips exactly those names and re-publishes the rest, byte for byte, to the original stream.

A sharded logical stream has a dead-letter stream per shard (on one server the shards may share
one): the ``*_all`` functions work over every one of them, each key on its own, so that they
work on a cluster; a dead entry's ``edged-stream`` names the shard it came from.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from edged.admin.lookup import default_dead_letter_of
from edged.admin.shards import Target, ambiguous_ids, page_end
from edged.config import Config
from edged.errors import EdgedError, UsageError
from edged.ids import id_key, id_ms, is_full_id, is_range_id
from edged.keys import (
    DEAD_CONSUMER,
    DEAD_DELIVERIES,
    DEAD_FAILED_AT,
    DEAD_GROUP,
    DEAD_ID,
    DEAD_METADATA_FIELDS,
    DEAD_REASON,
    DEAD_STREAM,
)
from edged.layout import physical_streams
from edged.lua import source
from edged.replies import text
from edged.scripts import add_then_check

PAGE = 500  # entries read per XRANGE while replaying everything

class DeadEntryMissing(EdgedError):
    """An id asked for is not in the dead-letter stream."""


class Base64(msgspec.Struct, frozen=True):
    """A field value that is not UTF-8 text, as ``{"base64": "..."}`` in JSON."""

    base64: str


FieldValue = str | Base64


# omit_defaults: the fields only sharded streams have stay out of the JSON of the others.
class DeadEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """One dead-letter entry. Metadata is None where the entry lacks it (not written by edged)."""

    dead_id: str
    stream: str | None
    group: str | None
    original_id: str | None
    reason: str | None
    deliveries: int | None
    consumer: str | None
    failed_at: str | None
    age_seconds: float | None
    """Since ``failed_at`` (or, without it, since the dead id's time), by this host's clock."""
    fields: dict[str, FieldValue]
    """The original entry's fields: text where UTF-8, else ``{"base64": ...}``."""
    shard: int | None = None
    """Over a sharded logical stream: the index of the shard ``stream`` names, if it is one."""
    dead_letter: str | None = None
    """Over a sharded logical stream: the dead-letter stream the entry is in."""


class DeadPage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One page of a dead-letter stream, oldest first."""

    dead_letter: str | None
    """None over a sharded logical stream whose shards have dead-letter streams of their own."""
    length: int
    """Entries in the whole dead-letter stream (all of them, over a sharded stream)."""
    entries: list[DeadEntry]
    next_after: str | None
    """Give this as ``--after`` for the next page; None on the last page."""
    dead_letters: list[str] | None = None
    """Over a sharded logical stream: every dead-letter stream read."""


class Replayed(msgspec.Struct, frozen=True):
    dead_id: str
    stream: str
    new_id: str


class Failure(msgspec.Struct, frozen=True):
    dead_id: str
    error: str


class ReplayResult(msgspec.Struct, frozen=True, omit_defaults=True):
    dead_letter: str | None
    """None over a sharded logical stream whose shards have dead-letter streams of their own."""
    replayed: list[Replayed]
    failed: list[Failure]
    dead_letters: list[str] | None = None
    """Over a sharded logical stream: every dead-letter stream replayed from."""


class PurgeResult(msgspec.Struct, frozen=True, omit_defaults=True):
    dead_letter: str | None
    """None over a sharded logical stream whose shards have dead-letter streams of their own."""
    deleted: int
    missing: list[str]
    """``--id`` values that were not in the dead-letter stream."""
    dead_letters: list[str] | None = None
    """Over a sharded logical stream: every dead-letter stream purged."""


# --------------------------------------------------------------------------- names and ids


def dead_letter_stream(cfg: Config, stream: str, override: str | None = None) -> str:
    """``override``, else the dead-letter setting of ``stream`` in the config, else ``<stream>:dead``.

    A stream read by several groups with different dead-letter streams is ambiguous: the caller
    must name one.
    """
    if override:
        return override
    names = sorted({p.cfg.dead_letter_stream for p in physical_streams(cfg)
                    if p.cfg.stream == stream})
    if len(names) > 1:
        raise UsageError(
            f"stream {stream!r} has several dead-letter streams in the config "
            f"({', '.join(names)}): choose one with --dead-letter"
        )
    return names[0] if names else default_dead_letter_of(cfg, stream)


def check_entry_id(text: str, option: str) -> str:
    """A full stream id (``ms-seq``), as ``show``, ``replay --id`` and ``purge --id`` need."""
    if not is_full_id(text):
        raise UsageError(f"{option} {text!r}: not a stream entry id (like 1712345678901-0)")
    return text


def check_range_id(text: str, option: str) -> str:
    """A stream id or its millisecond part alone, as ``--after`` and ``--before`` take."""
    if not is_range_id(text):
        raise UsageError(f"{option} {text!r}: not a stream id (like 1712345678901-0 or 1712345678901)")
    return text


# --------------------------------------------------------------------------- decoding


def _value(value: bytes) -> FieldValue:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return Base64(base64.b64encode(value).decode("ascii"))


def _age(failed_at: str | None, dead_id: str, now: float) -> float | None:
    if failed_at is not None:
        try:
            when = datetime.fromisoformat(failed_at)
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None:
            return max(now - when.timestamp(), 0.0)
    # The dead id's time part is when Redis took the entry (by the server's clock).
    return max(now - id_ms(dead_id) / 1000, 0.0)


def decode_entry(dead_id: str, raw: dict[bytes, bytes], now: float | None = None) -> DeadEntry:
    """One dead-letter entry (fields as redis-py returns them, bytes) → DeadEntry."""
    meta: dict[str, str] = {}
    fields: dict[str, FieldValue] = {}
    for k, v in raw.items():
        name = k.decode("utf-8", errors="backslashreplace")
        if name in DEAD_METADATA_FIELDS:
            meta[name] = text(v)
        else:
            fields[name] = _value(v)
    deliveries_text = meta.get(DEAD_DELIVERIES)
    deliveries = int(deliveries_text) if deliveries_text and deliveries_text.isdigit() else None
    failed_at = meta.get(DEAD_FAILED_AT)
    return DeadEntry(
        dead_id=dead_id,
        stream=meta.get(DEAD_STREAM),
        group=meta.get(DEAD_GROUP),
        original_id=meta.get(DEAD_ID),
        reason=meta.get(DEAD_REASON),
        deliveries=deliveries,
        consumer=meta.get(DEAD_CONSUMER),
        failed_at=failed_at,
        age_seconds=_age(failed_at, dead_id, time.time() if now is None else now),
        fields=fields,
    )


Row = tuple[str, dict[bytes, bytes]]


def _rows(reply: Any) -> list[Row]:
    """redis-py's XRANGE reply (its stubs allow None everywhere) as (id, fields) pairs."""
    return [(text(eid), raw or {}) for eid, raw in reply or []]


async def _xrange(client: Redis, key: str, start: str, end: str, count: int) -> list[Row]:
    return _rows(await client.xrange(key, min=start, max=end, count=count))


# --------------------------------------------------------------------------- queries


async def list_dead(client: Redis, dead_letter: str, count: int = 50, after: str | None = None) -> DeadPage:
    """Up to ``count`` entries, oldest first, after the id ``after`` (exclusive) if given."""
    start = f"({after}" if after is not None else "-"
    async with client.pipeline(transaction=False) as pipe:
        pipe.xlen(dead_letter)
        pipe.xrange(dead_letter, min=start, max="+", count=count + 1)
        length, reply = await pipe.execute()
    rows = _rows(reply)
    now = time.time()
    entries = [decode_entry(eid, raw, now) for eid, raw in rows[:count]]
    more = len(rows) > count
    return DeadPage(
        dead_letter=dead_letter,
        length=int(length),
        entries=entries,
        next_after=entries[-1].dead_id if more and entries else None,
    )


async def show_dead(client: Redis, dead_letter: str, dead_id: str) -> DeadEntry:
    """The one entry ``dead_id``; DeadEntryMissing if it is not there."""
    rows = await _xrange(client, dead_letter, dead_id, dead_id, 1)
    if not rows:
        raise DeadEntryMissing(f"{dead_id}: not in dead-letter stream {dead_letter!r}")
    eid, raw = rows[0]
    return decode_entry(eid, raw)


# --------------------------------------------------------------------------- actions


# XRANGE of one entry through EVAL: the reply comes back flat, as stored (duplicate and binary
# field names kept), where redis-py would make it a dict.
_READ_ENTRY = "return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])"


async def _read_flat(client: Redis, key: str, entry_id: str) -> list[bytes] | None:
    """The fields of one entry, flat and as stored; None if it is not there."""
    rows = await client.eval(_READ_ENTRY, 1, key, entry_id)
    return list(rows[0][1]) if rows else None


def original_fields(flat: list[bytes]) -> tuple[bytes | None, list[bytes]]:
    """(the stream a dead entry came from, its original fields): the first field of each
    ``edged-*`` name is edged's (they come first); any later one is the entry's own."""
    names = {name.encode() for name in DEAD_METADATA_FIELDS}
    origin: bytes | None = None
    kept: list[bytes] = []
    for name, value in zip(flat[::2], flat[1::2], strict=True):
        if name in names:
            names.discard(name)
            if name == DEAD_STREAM.encode():
                origin = value
            continue
        kept += [name, value]
    return origin, kept


async def _republish(client: Redis, dead_letter: str, origin: bytes, dead_id: str,
                     fields: list[bytes]) -> str | None:
    """XADD the fields to ``origin`` and delete ``dead_id``, atomically (lua/dlq_replay.lua);
    the new id, or None if ``dead_id`` was gone."""
    return await add_then_check(client, origin, fields, _REPLAY_SOURCE, [dead_letter, origin],
                                [dead_id, len(fields), fields[0], fields[1]])


_REPLAY_SOURCE = source("dlq_replay")


async def _all_ids(client: Redis, dead_letter: str) -> list[str]:
    """Every id present now; entries dead-lettered while we replay wait for the next run."""
    last = await client.xrevrange(dead_letter, count=1)
    if not last:
        return []
    end = text(last[0][0])
    ids: list[str] = []
    start = "-"
    while True:
        rows = await _xrange(client, dead_letter, start, end, PAGE)
        ids += [eid for eid, _ in rows]
        if len(rows) < PAGE:
            return ids
        start = f"({ids[-1]}"


async def replay(client: Redis, dead_letter: str, ids: list[str] | None = None) -> ReplayResult:
    """Re-publish entries (``ids``, or all when None) to their original streams, original fields
    only; each is deleted from ``dead_letter`` in the same MULTI/EXEC as its XADD, only if the
    XADD succeeded (and the copy deleted again if the entry was replayed or purged meanwhile).

    Entries that cannot be replayed (not there, no ``edged-stream``, refused) are reported in
    ``failed`` and left as they are; the others are still replayed.
    """
    replayed: list[Replayed] = []
    failed: list[Failure] = []
    todo = await _all_ids(client, dead_letter) if ids is None else list(dict.fromkeys(ids))
    for dead_id in todo:
        outcome = await _replay_one(client, dead_letter, dead_id)
        if isinstance(outcome, Replayed):
            replayed.append(outcome)
        else:
            failed.append(outcome)
    return ReplayResult(dead_letter=dead_letter, replayed=replayed, failed=failed)


async def _replay_one(client: Redis, dead_letter: str, dead_id: str) -> Replayed | Failure:
    flat = await _read_flat(client, dead_letter, dead_id)
    if flat is None:
        return Failure(dead_id, f"not in dead-letter stream {dead_letter!r}")
    origin, fields = original_fields(flat)
    if origin is None:
        return Failure(dead_id, f"has no {DEAD_STREAM} field: edged does not know where it came "
                       "from")
    if not fields:
        return Failure(dead_id, "not replayed: the entry has no original fields to replay")
    try:
        new_id = await _republish(client, dead_letter, origin, dead_id, fields)
    except ResponseError as exc:  # WRONGTYPE, OOM, NOPERM...
        return Failure(dead_id, f"not replayed: {exc}")
    if new_id is None:  # deleted between our read and the script (another replay or purge)
        return Failure(dead_id, f"not in dead-letter stream {dead_letter!r}")
    # For the report; the key stays bytes.
    return Replayed(dead_id=dead_id, stream=origin.decode("utf-8", errors="replace"),
                    new_id=new_id)


async def purge(
    client: Redis, dead_letter: str, ids: list[str] | None = None, before: str | None = None
) -> PurgeResult:
    """Delete ``ids``, or the entries older than ``before`` (exclusive), or all entries.

    The stream key itself stays (with any groups someone created on it).
    """
    if ids is not None and before is not None:
        raise UsageError("give --id or --before, not both")
    if ids is not None:
        unique = list(dict.fromkeys(ids))
        async with client.pipeline(transaction=False) as pipe:
            for dead_id in unique:
                pipe.xdel(dead_letter, dead_id)
            counts = await pipe.execute()
        missing = [dead_id for dead_id, n in zip(unique, counts, strict=True) if not n]
        return PurgeResult(dead_letter=dead_letter, deleted=sum(counts), missing=missing)
    if before is not None:
        deleted = await client.xtrim(dead_letter, minid=before, approximate=False)
    else:
        deleted = await client.xtrim(dead_letter, maxlen=0, approximate=False)
    return PurgeResult(dead_letter=dead_letter, deleted=int(deleted), missing=[])


# --------------------------------------------------------------------------- sharded streams


@dataclass(frozen=True)
class DeadLetters:
    """The dead-letter streams of a sharded logical stream: one per shard, or one that the
    shards share (one server, ``dead-letter`` set)."""

    stream: str
    """The logical stream."""
    names: list[str]
    """Each dead-letter stream once, in the order of the first shard using it."""
    first_shard: list[int]
    """The first shard using each of ``names``: how an ambiguous id is reported."""
    shard_of: dict[str, int]
    """Shard name → index: a dead entry's ``edged-stream`` says which shard it came from."""

    @classmethod
    def of(cls, target: Target) -> DeadLetters:
        """The dead-letter streams of a sharded ``target``'s shards (names from the config)."""
        firsts: dict[str, int] = {}
        for shard in target.shards:
            firsts.setdefault(shard.dead_letter, shard.index)
        return cls(target.stream, list(firsts), list(firsts.values()),
                   {s.stream: s.index for s in target.shards})

    @property
    def shared(self) -> str | None:
        """The one dead-letter stream all shards share, else None."""
        return self.names[0] if len(self.names) == 1 else None

    def annotate(self, entry: DeadEntry, dead_letter: str) -> DeadEntry:
        """The entry with its shard (from ``edged-stream``) and its dead-letter stream."""
        shard = self.shard_of.get(entry.stream) if entry.stream is not None else None
        return msgspec.structs.replace(entry, shard=shard, dead_letter=dead_letter)


async def list_dead_all(client: Redis, dls: DeadLetters, count: int = 50,
                        after: str | None = None) -> DeadPage:
    """``list_dead`` over every dead-letter stream of a sharded stream: merged, oldest first
    (by dead id), each entry with its shard and dead-letter stream."""
    pages = [await list_dead(client, name, count=count, after=after) for name in dls.names]
    merged = sorted(((e, name) for name, p in zip(dls.names, pages, strict=True) for e in p.entries),
                    key=lambda pair: (id_key(pair[0].dead_id), dls.names.index(pair[1])))
    end = page_end([e.dead_id for e, _ in merged], count)
    entries = [dls.annotate(e, name) for e, name in merged[:end]]
    more = end < len(merged) or any(p.next_after is not None for p in pages)
    return DeadPage(dead_letter=dls.shared, length=sum(p.length for p in pages), entries=entries,
                    next_after=entries[-1].dead_id if more and entries else None,
                    dead_letters=dls.names)


async def _locate(client: Redis, dls: DeadLetters, ids: list[str]) -> dict[str, list[str]]:
    """Dead id → the dead-letter streams holding it (ids found nowhere left out). Raises
    Ambiguous, naming them, for ids in several (dead ids of different streams may be equal)."""
    where: dict[str, list[str]] = {}
    for name in dls.names:
        async with client.pipeline(transaction=False) as pipe:
            for dead_id in ids:
                pipe.xrange(name, min=dead_id, max=dead_id, count=1)
            replies = await pipe.execute()
        for dead_id, rows in zip(ids, replies, strict=True):
            if rows:
                where.setdefault(dead_id, []).append(name)
    error = ambiguous_ids(
        {i: [dls.first_shard[dls.names.index(n)] for n in names] for i, names in where.items()},
        f"dead-letter ids of {dls.stream!r}")
    if error is not None:
        raise error
    return where


def _grouped(ids: list[str], where: dict[str, list[str]], dls: DeadLetters) -> list[tuple[str, list[str]]]:
    """The located ``ids`` by dead-letter stream, streams in ``dls`` order, ids as given."""
    return [(name, found) for name in dls.names
            if (found := [i for i in ids if where.get(i) == [name]])]


async def show_dead_all(client: Redis, dls: DeadLetters, dead_id: str) -> DeadEntry:
    """The entry ``dead_id`` from whichever dead-letter stream of the shards holds it."""
    found = (await _locate(client, dls, [dead_id])).get(dead_id)
    if not found:
        raise DeadEntryMissing(f"{dead_id}: not in the dead-letter streams of {dls.stream!r}")
    return dls.annotate(await show_dead(client, found[0], dead_id), found[0])


async def replay_all(client: Redis, dls: DeadLetters, ids: list[str] | None = None) -> ReplayResult:
    """``replay`` over the shards' dead-letter streams: every entry goes back to the shard its
    ``edged-stream`` names. Nothing is replayed if an id is in several dead-letter streams."""
    failed: list[Failure] = []
    if ids is None:
        todo: list[tuple[str, list[str] | None]] = [(name, None) for name in dls.names]
    else:
        unique = list(dict.fromkeys(ids))
        where = await _locate(client, dls, unique)
        failed = [Failure(i, f"not in the dead-letter streams of {dls.stream!r}")
                  for i in unique if i not in where]
        todo = list(_grouped(unique, where, dls))
    results = [await replay(client, name, part) for name, part in todo]
    return ReplayResult(dead_letter=dls.shared,
                        replayed=[r for res in results for r in res.replayed],
                        failed=[f for res in results for f in res.failed] + failed,
                        dead_letters=dls.names)


async def purge_all(client: Redis, dls: DeadLetters, ids: list[str] | None = None,
                    before: str | None = None) -> PurgeResult:
    """``purge`` over the shards' dead-letter streams (``ids`` where each is; nothing is
    deleted if an id is in several dead-letter streams)."""
    if ids is not None and before is not None:
        raise UsageError("give --id or --before, not both")
    missing: list[str] = []
    if ids is None:
        results = [await purge(client, name, before=before) for name in dls.names]
    else:
        unique = list(dict.fromkeys(ids))
        where = await _locate(client, dls, unique)
        missing = [i for i in unique if i not in where]
        results = [await purge(client, name, ids=part) for name, part in _grouped(unique, where, dls)]
    return PurgeResult(dead_letter=dls.shared, deleted=sum(r.deleted for r in results),
                       missing=missing + [m for r in results for m in r.missing],
                       dead_letters=dls.names)
