"""Writing entries in edged's shape: the body in ``payload``, other fields as metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from redis.asyncio import Redis

from edged.errors import EdgedError
from edged.keys import PAYLOAD_FIELD

PIPELINE_CHUNK = 1000


class NotReplicated(EdgedError):
    """Fewer replicas than asked acknowledged the entries within the timeout.

    The entries are on the primary; if it fails before they reach a replica, a failover can
    lose them. ``ids`` are the entries this concerns.
    """

    def __init__(self, message: str, ids: list[str]) -> None:
        super().__init__(message)
        self.ids = ids


async def publish(
    client: Redis,
    stream: str,
    payloads: Iterable[bytes],
    *,
    fields: Mapping[str, bytes] | None = None,
    maxlen: int | None = None,
    wait_replicas: int = 0,
    wait_timeout: float = 1.0,
) -> list[str]:
    """XADD one entry per payload, pipelined; returns the new ids in order.

    ``maxlen`` trims approximately (``MAXLEN ~``), which Redis does cheaply per macro node.
    With ``wait_replicas`` each pipelined chunk ends with WAIT on the same connection, so
    every entry returned has reached that many replicas; else NotReplicated is raised.
    """
    extra = dict(fields or {})
    ids: list[str] = []
    chunk: list[bytes] = []

    async def flush() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for body in chunk:
                entry = {**extra, PAYLOAD_FIELD: body}
                pipe.xadd(stream, entry, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            if wait_replicas:
                pipe.wait(wait_replicas, int(wait_timeout * 1000))
            replies = await pipe.execute()
        if wait_replicas:
            acked = int(replies.pop())
            new = [r.decode() if isinstance(r, bytes) else str(r) for r in replies]
            if acked < wait_replicas:
                raise NotReplicated(
                    f"only {acked} of {wait_replicas} replicas acknowledged {len(new)} entries "
                    f"within {wait_timeout:g}s; they are on the primary but a failover could "
                    f"lose them (first {new[0]}, last {new[-1]})",
                    ids + new,
                )
            ids.extend(new)
        else:
            ids.extend(r.decode() if isinstance(r, bytes) else str(r) for r in replies)
        chunk.clear()

    for body in payloads:
        chunk.append(body)
        if len(chunk) >= PIPELINE_CHUNK:
            await flush()
    if chunk:
        await flush()
    return ids
