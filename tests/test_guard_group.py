"""Guards the promise that a lost consumer group is recreated where no entry is skipped
(README "Failover runbook": "edged recreates it just before the oldest entry it knew pending,
never at `$`"; docs/design.md "A lost group").

The other group tests create their groups at start-id `0`, where recreating a lost group at
its start-id would skip nothing. Here the group starts at `$` (the default): recreated there,
every entry not yet delivered when the group vanished would be skipped for good.

One StreamConsumer in process against the session server; the handler records what it ran.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis

from edged import Event
from edged.durations import Duration
from tests.support import Consuming, make_consumer, until

pytestmark = pytest.mark.anyio

GROUP = "edged"
DEADLINE = 10.0  # generous: each wait takes well under a second



def add(r: redis.Redis, stream: str, body: bytes = b"{}") -> str:
    return r.xadd(stream, {"payload": body}).decode()


async def test_lost_group_started_at_dollar_is_recreated_without_skipping(
    client: Any, r: redis.Redis, stream: str,
) -> None:
    """start-id `$`, concurrency 1. One entry is handled; a second one's handler is held, so
    two more wait unread behind it. Then, in one MULTI, the group is destroyed and two more
    entries are added (they arrive while it is gone). The held handler is let go: its ack
    meets the missing group, and the consumer recreates it.

    Must hold: the group is recreated (counted once at least) and every entry after the
    first, the two unread and the two added while it was gone included, is handled; the PEL
    drains. (Recreated at `$`, the four would never be delivered.)"""
    ran: list[str] = []
    release = anyio.Event()
    held: list[str] = []

    async def handler(event: Event) -> None:
        if event.payload == {"hold": True} and not release.is_set():
            held.append(event.id)
            await release.wait()
        ran.append(event.id)

    consumer = make_consumer(client, stream, handler, concurrency=1, start_id="$",
                             claim_idle=Duration(60), claim_interval=Duration(0.2))
    async with Consuming(consumer):
        # Created at `$`: only entries added from now on are read.
        await until(lambda: consumer.ready.is_set(), DEADLINE, what="the consumer reading")
        first = add(r, stream)
        await until(lambda: first in ran and consumer.stats.acked == 1, DEADLINE,
                    what="the first entry handled and acked")
        busy = add(r, stream, b'{"hold": true}')
        await until(lambda: held == [busy], DEADLINE, what="the held entry running")
        unread = [add(r, stream), add(r, stream)]  # behind the held one: not delivered yet
        with r.pipeline(transaction=True) as pipe:
            pipe.xgroup_destroy(stream, GROUP)
            pipe.xadd(stream, {"payload": b"{}"})
            pipe.xadd(stream, {"payload": b"{}"})
            _, *while_gone = (x.decode() if isinstance(x, bytes) else x for x in pipe.execute())
        release.set()
        expected = {busy, *unread, *while_gone}
        await until(lambda: expected <= set(ran), DEADLINE,
                    what=lambda: f"{sorted(expected - set(ran))} handled after the group was "
                                 f"recreated (ran: {ran})")
        assert consumer.stats.groups_recreated >= 1
        await until(lambda: int(r.xpending(stream, GROUP)["pending"]) == 0, DEADLINE,
                    what="the PEL drained")
    assert first in ran
