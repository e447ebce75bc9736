"""The Lua scripts that make ownership checks and their action one atomic step."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from edged.keys import HB_INSTANCE
from edged.lua import source
from edged.replies import pairs, text, texts

# A released entry looks idle this long, so any peer's XAUTOCLAIM takes it at once: the config
# bounds claim-idle below it (config.MAX_CLAIM_IDLE).
RELEASE_IDLE_MS = 86_400_000
# max-len finds where to cut by walking the stream (lua/trim.lua): at most this many entries per
# call, so one trim blocks the server for a fraction of a second; a larger backlog takes more calls.
TRIM_WALK_LIMIT = 100_000


async def add_then_check(client: Redis, key: str | bytes, fields: list[Any], check_source: str,
                         check_keys: list[Any], check_args: list[Any]) -> str | None:
    """XADD ``fields`` to ``key``, then run the check script, in one MULTI/EXEC; its reply.

    For copies too wide for Lua (it cannot pass more than about 8 000 arguments to one
    redis.call): the XADD is a plain command, and the script, which nothing can run ahead of,
    keeps or deletes the copy and does the rest (lua/dead_letter.lua, lua/dlq_replay.lua). EVAL
    with the source, not EVALSHA: a script cache emptied between the load and EXEC would leave
    the copy behind.
    """
    pipe = client.pipeline(transaction=True)
    pipe.execute_command("XADD", key, "*", *fields)
    pipe.execute_command("EVAL", check_source, len(check_keys), *check_keys, *check_args)
    try:
        added, result = await pipe.execute(raise_on_error=False)
    finally:
        await pipe.reset()
    for outcome in (added, result):  # the XADD's error first: it is the cause
        if isinstance(outcome, Exception):
            raise outcome
    return None if result is None else text(result)


@dataclass(frozen=True)
class TrimResult:
    """What lua/trim.lua did (or would do) to one stream."""

    stream: str
    trimmed: int | None
    """Entries trimmed (mode ``trim``); for ``dry``, counted by the caller; else None."""
    first_id: str | None
    """The oldest entry that goes (went), if any."""
    last_id: str | None
    """The newest entry that goes (went), if any."""
    minid: str | None
    """The XTRIM MINID point: every entry below it goes."""
    floor: str | None
    """The lowest id a consumer group still needs; None when no group needs any."""
    holder: str | None
    """The group whose floor that is; ``""`` for a stream with no group (held whole)."""
    blocked: bool
    """The rule wants entries the floor keeps."""
    held_id: str | None
    """The oldest entry the floor keeps that the rule wants gone."""
    past_seconds: float
    """How far past retention that entry is (max-len alone: its age); 0 when not blocked."""
    groups: int
    length: int
    """The stream's length before trimming."""


def _or_none(value: Any) -> str | None:
    t = text(value)
    return t or None


MAX_SEQ = "18446744073709551615"  # the largest sequence part of a stream id (2**64 - 1)


def fence_range(ids: list[str]) -> tuple[str, str]:
    """A range of stream ids for lua/fenced_ack.lua that holds every one of ``ids`` when their
    millisecond parts have the same number of digits (every id Redis makes between 2001 and 2286).

    Comparisons in C only: ordering ids as numbers in Python cost the hot path several times
    more. With millisecond parts of one length the lexicographically smallest and largest ids
    carry the smallest and largest millisecond parts, whatever their sequence parts. When that
    is one millisecond (a busy stream: a batch often is), ids order as (length, text), and the
    range is exact; otherwise it spans the first and last millisecond whole, which holds a few
    more of this consumer's entries than needed. Ids outside the range (millisecond parts of
    other lengths) are found by the script one by one.
    """
    lo_ms = min(ids).partition("-")[0]
    hi_ms = max(ids).partition("-")[0]
    if lo_ms == hi_ms:
        by_length = list(zip(map(len, ids), ids, strict=True))
        return min(by_length)[1], max(by_length)[1]
    return lo_ms + "-0", hi_ms + "-" + MAX_SEQ


class _Script:
    """A script sent by its SHA1 (EVALSHA), and by its source (EVAL) when the server answers
    NOSCRIPT: a restarted server, or a replica just promoted, has an empty script cache.

    Not redis-py's registered scripts: on NOSCRIPT they SCRIPT LOAD and retry, and on a
    cluster the load goes to the primaries the client knows, which right after a failover is
    not yet the node that answered NOSCRIPT. EVAL runs on the key's node and caches it there.
    """

    def __init__(self, client: Redis, text: str) -> None:
        self._client = client
        self._source = text
        self._sha = hashlib.sha1(text.encode()).hexdigest()

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        try:
            return await self._client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.eval(self._source, len(keys), *keys, *args)

    async def read_only(self, keys: list[Any], args: list[Any]) -> Any:
        """EVALSHA_RO / EVAL_RO: the server refuses any write the script would make (and a
        read-only ACL user may run it)."""
        try:
            return await self._client.evalsha_ro(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.eval_ro(self._source, len(keys), *keys, *args)


class Scripts:
    """The scripts of one client, each sent by SHA1 and by source after NOSCRIPT (_Script)."""

    def __init__(self, client: Redis) -> None:
        self._ack = _Script(client, self.FENCED_ACK_SOURCE)
        self._release = _Script(client, source("fenced_release"))
        self._client = client
        self._lease = _Script(client, source("lease"))
        self._reclaim = _Script(client, source("reclaim"))
        self._heartbeat = _Script(client, source("heartbeat"))
        self._heartbeat_end = _Script(client, source("heartbeat_end"))
        self._delete_consumer = _Script(client, source("delete_consumer"))
        self._trim = _Script(client, source("trim"))

    # The reader carries acks by SHA1 on one server (consume/wire.py: it sends the source right
    # after a NOSCRIPT) and by source in a cluster's pipeline, where redirects and retries are
    # redis-py's: a server that lost its script cache must not fail the ack beside a read.
    FENCED_ACK_SOURCE = source("fenced_ack")
    FENCED_ACK_SHA = hashlib.sha1(FENCED_ACK_SOURCE.encode()).hexdigest()
    DEAD_LETTER_SOURCE = source("dead_letter")

    def fenced_ack_args(
        self, stream: str, group: str, consumer: str, ids: list[str], others: int,
        *, joined: bool = False,
    ) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of a fenced ack; ``others`` bounds the consumer's other pending entries.

        ``joined``: the ids in one space-separated argument, for redis-py's own packing (a
        Python loop per argument); hiredis packs one argument per id faster than the script
        would split them.
        """
        head: list[str | int] = [group, consumer, others, *fence_range(ids)]
        if joined:
            return [stream], [*head, " ".join(ids)]
        return [stream], [*head, *ids]

    async def fenced_ack(
        self, stream: str, group: str, consumer: str, ids: list[str], others: int = 0
    ) -> int:
        """XACK the ids this consumer still owns; returns how many were acked."""
        if not ids:
            return 0
        keys, args = self.fenced_ack_args(stream, group, consumer, ids, others, joined=True)
        return int(await self._ack(keys=keys, args=args))

    async def fenced_release(
        self, stream: str, group: str, consumer: str, entries: list[tuple[str, int]]
    ) -> int:
        """Hand back (id, delivery) entries never started; returns how many were released."""
        if not entries:
            return 0
        args: list[Any] = [group, consumer, RELEASE_IDLE_MS]
        for entry_id, delivery in entries:
            args += [entry_id, max(delivery - 1, 0)]
        return int(await self._release(keys=[stream], args=args))

    async def dead_letter(
        self,
        stream: str,
        dead_stream: str,
        group: str,
        consumer: str,
        entry_id: str,
        metadata: list[tuple[str, str]],
        fields: list[bytes],
    ) -> str | None:
        """Copy the entry to ``dead_stream`` and ack it, atomically; None if it is not ours.

        The copy is ``metadata`` (edged's pairs, first) then the entry's own ``fields`` exactly
        as Redis sent them (flat, binary, duplicates kept); lua/dead_letter.lua keeps and acks
        it, or deletes it again (``add_then_check``).
        """
        meta = [part for pair in metadata for part in pair]
        return await add_then_check(self._client, dead_stream, [*meta, *fields],
                                    self.DEAD_LETTER_SOURCE, [stream, dead_stream],
                                    [group, consumer, entry_id, *meta])

    async def extend_leases(
        self, stream: str, group: str, consumer: str, ids: list[str]
    ) -> list[str]:
        """Reset the idle time of ``ids`` still owned by ``consumer``; returns the lost ones."""
        if not ids:
            return []
        lost = await self._lease(keys=[stream], args=[group, consumer, " ".join(ids)])
        return texts(lost)

    async def reclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, cursor: str, count: int
    ) -> tuple[str, list[Any], list[int], list[str]]:
        """One XAUTOCLAIM step: (next cursor, raw entries, their delivery counts, deleted ids)."""
        reply = await self._reclaim(
            keys=[stream], args=[group, consumer, min_idle_ms, cursor, count]
        )
        next_cursor, entries, counts, deleted = reply
        return text(next_cursor), entries, [int(c) for c in counts], texts(deleted)

    async def heartbeat(
        self, record_key: str, seen: str, consumer: str, instance: str, ttl_ms: int,
        takeover: bool, fields: dict[str, str],
    ) -> dict[str, str] | None:
        """Record this instance under ``consumer``; the current holder's record if refused."""
        args: list[str | int] = [consumer, instance, ttl_ms, "1" if takeover else "0", HB_INSTANCE]
        for k, v in fields.items():
            args += [k, v]
        holder = await self._heartbeat(keys=[record_key, seen], args=args)
        return pairs(holder) if holder else None

    async def heartbeat_end(self, record_key: str, instance: str) -> bool:
        return bool(await self._heartbeat_end(keys=[record_key], args=[instance, HB_INSTANCE]))

    async def delete_consumer(self, stream: str, group: str, consumer: str, expiry_ms: int) -> str:
        """Delete ``consumer`` if it did nothing for ``expiry_ms`` and owns nothing; returns what
        was decided. Its liveness in the registry is the caller's to check first."""
        result = await self._delete_consumer(keys=[stream], args=[group, consumer, expiry_ms])
        return text(result)

    async def trim(
        self, stream: str, retention_ms: int, max_len: int,
        mode: Literal["trim", "dry", "probe"] = "trim", no_group: Literal["hold", "free"] = "hold",
        walk_limit: int = TRIM_WALK_LIMIT,
    ) -> TrimResult:
        """Trim ``stream`` by age and length below the floor of its groups (lua/trim.lua);
        ``dry`` and ``probe`` trim nothing and only say where the trim would stop and why."""
        args = [retention_ms, max_len, mode, no_group, walk_limit]
        run = self._trim if mode == "trim" else self._trim.read_only
        reply = await run(keys=[stream], args=args)
        count, first, last, minid, floor, holder, blocked, held, past, groups, length = reply
        return TrimResult(
            stream=stream, trimmed=None if int(count) < 0 else int(count),
            first_id=_or_none(first), last_id=_or_none(last), minid=_or_none(minid),
            floor=_or_none(floor), holder=None if not floor else text(holder),
            blocked=bool(int(blocked)), held_id=_or_none(held), past_seconds=int(past) / 1000,
            groups=int(groups), length=int(length),
        )
