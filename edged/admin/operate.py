"""The two operator actions on pending entries: ``claim`` them for a consumer, ``ack`` them."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from edged.admin.lookup import NotFound, NotPending, groups_of, nogroup_error
from edged.replies import text


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
