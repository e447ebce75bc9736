"""What a stream is: its length, first and last id, and the memory it takes.

Shown by `edged groups --all` and `edged status --all` under the groups: the fleet-wide views,
where a stream nobody reads any more can be found growing. MEMORY USAGE samples a few
entries (Redis's default of 5), so it is an estimate that costs little on a big stream.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edged.connect.transient import TRANSIENT_ERRORS
from edged.replies import text


class StreamInfo(msgspec.Struct, frozen=True):
    stream: str
    length: int
    first_id: str | None
    last_id: str | None
    memory_bytes: int | None
    """MEMORY USAGE (an estimate); None when the ACL user may not ask."""


async def stream_info(client: Redis, streams: list[str]) -> list[StreamInfo]:
    out = []
    for stream in dict.fromkeys(streams):
        try:
            info = await client.xinfo_stream(stream)
        except (*TRANSIENT_ERRORS, RedisError):
            continue  # gone since it was listed, or not ours to read
        try:
            memory = await client.memory_usage(stream)
        except RedisError:
            memory = None
        first, last = info.get("first-entry"), info.get("last-entry")
        out.append(StreamInfo(stream, int(info.get("length") or 0),
                              text(first[0]) if first else None,
                              text(last[0]) if last else None,
                              None if memory is None else int(memory)))
    return out
