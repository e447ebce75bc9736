"""Removing consumers that are dead and own nothing, so groups do not fill with old names.

XGROUP DELCONSUMER drops a consumer's pending entries for good; the script checks "no live
heartbeat, not seen for consumer-expiry, nothing pending" in the same step as the delete. A
dead consumer that still owns entries is left alone: the reclaimers take its entries first.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from edged.keys import daemon_key, seen_key
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
            verdict = await scripts.delete_consumer(
                stream, group, name, daemon_key(prefix, name), seen_key(prefix), expiry_ms
            )
        except RedisError as exc:
            log.warning("stream %s: consumer cleanup failed (%s)", stream, exc)
            return removed
        if verdict == "deleted":
            removed.append(name)
            log.info("stream %s group %s: removed dead consumer %s (no heartbeat, nothing pending)",
                     stream, group, name)
    return removed
