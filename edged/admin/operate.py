"""The two operator actions on pending entries: ``claim`` them for a consumer, ``ack`` them.

On a sharded logical stream an id alone does not say which shard it is pending in: each shard
is asked (one script per shard, whose one key is the shard) and the action runs there. An id
pending in several shards is refused, naming it: the operator names the shard.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from edged.admin.lookup import NotFound, NotPending, groups_of, nogroup_error
from edged.admin.shards import Shard, Target, ambiguous_ids
from edged.replies import text


class ShardClaim(msgspec.Struct, frozen=True):
    shard: int
    stream: str
    claimed: list[str]


class ShardAck(msgspec.Struct, frozen=True):
    shard: int
    stream: str
    acked: list[str]


# omit_defaults: ``shards`` stays out of the JSON of unsharded streams.
class ClaimResult(msgspec.Struct, frozen=True, omit_defaults=True):
    stream: str
    group: str
    to: str
    claimed: list[str]
    shards: list[ShardClaim] | None = None
    """A sharded logical stream: what was claimed in each shard that held some of the ids."""


class AckResult(msgspec.Struct, frozen=True, omit_defaults=True):
    stream: str
    group: str
    acked: list[str]
    not_pending: list[str]
    shards: list[ShardAck] | None = None
    """A sharded logical stream: what was acked in each shard that held some of the ids."""


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

_PENDING_HERE = """
local found = {}
for i = 2, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1) > 0 then
    found[#found + 1] = ARGV[i]
  end
end
return found
"""


async def _group_exists(client: Redis, stream: str, group: str) -> None:
    infos = await groups_of(client, stream)
    if infos is None:
        raise NotFound(f"no stream {stream!r}")
    if group not in {text(i["name"]) for i in infos}:
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
        raise nogroup_error(exc, stream, group) from None
    if not ok:
        raise NotPending(
            f"not pending in group {group!r} of {stream!r}: {', '.join(text(i) for i in result)}; "
            "nothing was claimed"
        )
    return ClaimResult(stream=stream, group=group, to=to, claimed=[text(i) for i in result])


async def ack(client: Redis, stream: str, group: str, ids: list[str]) -> AckResult:
    """XACK the ``ids`` that are pending; the others are reported in ``not_pending``."""
    await _group_exists(client, stream, group)
    unique = list(dict.fromkeys(ids))
    try:
        acked, missing = await client.eval(_ACK, 1, stream, group, *unique)
    except ResponseError as exc:
        raise nogroup_error(exc, stream, group) from None
    return AckResult(stream=stream, group=group, acked=[text(i) for i in acked],
                     not_pending=[text(i) for i in missing])


# --------------------------------------------------------------------------- sharded streams


async def _pending_in(client: Redis, shard: Shard, group: str, ids: list[str]) -> list[str]:
    """The ``ids`` pending in ``group`` of this shard; none when it has no such group yet."""
    try:
        return [text(i) for i in await client.eval(_PENDING_HERE, 1, shard.stream, group, *ids)]
    except ResponseError as exc:
        if isinstance(nogroup_error(exc, shard.stream, group), NotFound):
            return []
        raise


async def locate(client: Redis, target: Target, group: str, ids: list[str]) -> dict[str, list[Shard]]:
    """Id → the shards of ``target`` where it is pending in ``group`` (ids pending nowhere
    are left out). Raises Ambiguous, naming them, if an id is pending in several shards."""
    where: dict[str, list[Shard]] = {}
    for shard in target.shards:
        for entry_id in await _pending_in(client, shard, group, ids):
            where.setdefault(entry_id, []).append(shard)
    error = ambiguous_ids({i: [s.index for s in found] for i, found in where.items()},
                          f"pending in group {group!r} of {target.stream!r}")
    if error is not None:
        raise error
    return where


def _by_shard(ids: list[str], where: dict[str, list[Shard]]) -> list[tuple[Shard, list[str]]]:
    """The located ``ids`` grouped by their shard, shards in index order, ids as given."""
    grouped: dict[int, tuple[Shard, list[str]]] = {}
    for entry_id in ids:
        if entry_id in where:
            shard = where[entry_id][0]
            grouped.setdefault(shard.index, (shard, []))[1].append(entry_id)
    return [grouped[i] for i in sorted(grouped)]


async def claim_in(client: Redis, target: Target, group: str, ids: list[str], to: str) -> ClaimResult:
    """``claim`` on ``target``; over a sharded logical stream, each id in the shard where it is
    pending. All or nothing per shard, and nothing at all if an id is pending in no shard or
    in several; an id acked between the look and the claim stops the claim at its shard
    (NotPending says what the shards before it had claimed)."""
    if not target.sharded:
        return await claim(client, target.stream, group, ids, to)
    unique = list(dict.fromkeys(ids))
    where = await locate(client, target, group, unique)
    missing = [i for i in unique if i not in where]
    if missing:
        raise NotPending(f"not pending in group {group!r} of any shard of {target.stream!r}: "
                         f"{', '.join(missing)}; nothing was claimed")
    done: list[ShardClaim] = []
    for shard, shard_ids in _by_shard(unique, where):
        try:
            result = await claim(client, shard.stream, group, shard_ids, to)
        except NotPending as exc:
            before = "; ".join(f"{d.stream}: {' '.join(d.claimed)}" for d in done)
            raise NotPending(f"{exc}" + (f" in that shard; already claimed: {before}" if done else "")
                             ) from None
        done.append(ShardClaim(shard=shard.index, stream=shard.stream, claimed=result.claimed))
    return ClaimResult(stream=target.stream, group=group, to=to,
                       claimed=[i for d in done for i in d.claimed], shards=done)


async def ack_in(client: Redis, target: Target, group: str, ids: list[str]) -> AckResult:
    """``ack`` on ``target``; over a sharded logical stream, each id in the shard where it is
    pending (none is acked if one is pending in several shards)."""
    if not target.sharded:
        return await ack(client, target.stream, group, ids)
    unique = list(dict.fromkeys(ids))
    where = await locate(client, target, group, unique)
    done: list[ShardAck] = []
    missing = [i for i in unique if i not in where]
    for shard, shard_ids in _by_shard(unique, where):
        result = await ack(client, shard.stream, group, shard_ids)
        done.append(ShardAck(shard=shard.index, stream=shard.stream, acked=result.acked))
        missing += result.not_pending  # acked by someone else since we looked
    acked = {i for d in done for i in d.acked}
    return AckResult(stream=target.stream, group=group, acked=[i for i in unique if i in acked],
                     not_pending=[i for i in unique if i in set(missing)], shards=done)
