"""Removing consumers that are dead and own nothing, so groups do not fill with old names.

XGROUP DELCONSUMER drops a consumer's pending entries for good. The registry says first whether
the consumer is dead (no heartbeat record, not seen for consumer-expiry); the script then checks
"idle for consumer-expiry, nothing pending" in the same step as the delete (lua/
delete_consumer.lua says why the two need not be one step, which a cluster would not allow).
A dead consumer that still owns entries is left alone: the reclaimers take its entries first.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from edged.connect.transient import TRANSIENT_ERRORS
from edged.keys import daemon_key, seen_key
from edged.replies import int_or_none
from edged.scripts import Scripts

log = logging.getLogger("edged.cleanup")


async def remove_dead_consumers(
    client: Redis, scripts: Scripts, prefix: str, stream: str, group: str, me: str,
    expiry_ms: int,
) -> list[str]:
    """Delete the group's consumers that are dead and own nothing; returns their names."""
    try:
        consumers = await client.xinfo_consumers(stream, group)
    except ResponseError:
        return []  # no such stream or group (yet)
    removed: list[str] = []
    for info in consumers:
        name = info["name"].decode() if isinstance(info["name"], bytes) else str(info["name"])
        if name == me or int(info.get("pending", 0)) > 0 or int(info.get("idle", 0)) < expiry_ms:
            continue
        try:
            if not await _dead(client, prefix, name, expiry_ms):
                continue
            verdict = await scripts.delete_consumer(stream, group, name, expiry_ms)
        except (*TRANSIENT_ERRORS, RedisError) as exc:
            log.warning("stream %s: consumer cleanup failed (%s)", stream, exc)
            return removed
        if verdict == "deleted":
            removed.append(name)
            log.info("stream %s group %s: removed dead consumer %s (no heartbeat, nothing pending)",
                     stream, group, name)
    return removed


async def _dead(client: Redis, prefix: str, consumer: str, expiry_ms: int) -> bool:
    """No heartbeat record, and not seen for ``expiry_ms`` by the server's clock."""
    async with client.pipeline(transaction=False) as pipe:  # both keys share a slot
        pipe.exists(daemon_key(prefix, consumer))
        pipe.hget(seen_key(prefix), consumer)
        alive, seen = await pipe.execute()
    if alive:
        return False
    last = int_or_none(seen)
    if last is None:
        return True
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000 - last >= expiry_ms
