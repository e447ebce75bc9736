"""The chaos daemons' handler: records every finished run on the ledger server.

The ledger is a separate server that the harness never faults, so the records survive
whatever happens to the data server. Each run appends
``"<stream> <id> <consumer> <delivery> <seq>"`` to the list ``chaos:runs`` once the handler
has done its work (a run killed or cancelled half-way records nothing); for a sharded stream
``<stream>`` is the shard (``Event.stream``), as in the producer's records. The payload steers it:
``{"seq": n, "sleep": s}`` sleeps ``s`` seconds first, so faults catch entries in flight.

Environment: ``EDGED_CHAOS_LEDGER`` (the ledger's URL), ``EDGED_CHAOS_CONSUMER`` (the daemon's
consumer name, for the record).
"""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

from edged import Event

RUNS_KEY = "chaos:runs"

_client: aioredis.Redis | None = None


def _ledger() -> aioredis.Redis:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(os.environ["EDGED_CHAOS_LEDGER"], socket_timeout=5)
    return _client


async def record(event: Event) -> None:
    body = event.payload if isinstance(event.payload, dict) else {}
    if body.get("sleep"):
        await anyio.sleep(float(body["sleep"]))
    seq = int(body.get("seq", -1))
    consumer = os.environ.get("EDGED_CHAOS_CONSUMER", "?")
    await _ledger().rpush(RUNS_KEY, f"{event.stream} {event.id} {consumer} {event.delivery} {seq}")
