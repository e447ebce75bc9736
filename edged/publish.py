"""Writing entries in edged's shape: the body in ``payload``, other fields as metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from redis.asyncio import Redis

from edged.codec import PAYLOAD_FIELD

PIPELINE_CHUNK = 1000


async def publish(
    client: Redis,
    stream: str,
    payloads: Iterable[bytes],
    *,
    fields: Mapping[str, bytes] | None = None,
    maxlen: int | None = None,
) -> list[str]:
    """XADD one entry per payload, pipelined; returns the new ids in order.

    ``maxlen`` trims approximately (``MAXLEN ~``), which Redis does cheaply per macro node.
    """
    extra = dict(fields or {})
    ids: list[str] = []
    chunk: list[bytes] = []

    async def flush() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for body in chunk:
                entry = {**extra, PAYLOAD_FIELD.decode(): body}
                pipe.xadd(stream, entry, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            replies = await pipe.execute()
        ids.extend(r.decode() if isinstance(r, bytes) else str(r) for r in replies)
        chunk.clear()

    for body in payloads:
        chunk.append(body)
        if len(chunk) >= PIPELINE_CHUNK:
            await flush()
    if chunk:
        await flush()
    return ids
