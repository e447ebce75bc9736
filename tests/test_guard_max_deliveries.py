"""The max-deliveries boundary, checked on both sides by run counts, not only by fields.

Guards the promise (README "Delivery promises", poison entries): an entry's last allowed
delivery (delivery == max-deliveries) still runs its handler; an entry delivered more often
than that (a dead peer ran it max-deliveries times) is dead-lettered unrun, atomically with its
ack. An off-by-one either way breaks exactly one of the two tests below.

Entries get their delivery count from a dead peer ("ghost"): XCLAIM ... RETRYCOUNT sets it and
IDLE makes the entry look idle for an hour, so c1's next reclaim step takes it (and Redis counts
one more delivery) without waiting for claim-idle.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from edged import Event
from edged.durations import Duration
from edged.keys import DEAD_DELIVERIES, DEAD_ID, DEAD_REASON
from tests.support import Consuming, make_consumer, until

pytestmark = pytest.mark.anyio

GROUP = "edged"
MAX_DELIVERIES = 3
LONG_IDLE_MS = 3_600_000



def left_by_a_dead_peer(r: redis.Redis, stream: str, deliveries: int) -> str:
    """One entry pending for "ghost", delivered ``deliveries`` times, idle for an hour."""
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    entry_id = r.xadd(stream, {"payload": b"{}"}).decode()
    r.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
    r.xclaim(stream, GROUP, "ghost", 0, [entry_id], idle=LONG_IDLE_MS, retrycount=deliveries,
             justid=True)
    (row,) = r.xpending_range(stream, GROUP, "-", "+", 10)
    assert row["times_delivered"] == deliveries
    return entry_id


def consumer_of(client: Any, stream: str, runs: list[str]) -> Any:
    async def handler(event: Event) -> None:
        runs.append(event.id)

    return make_consumer(client, stream, handler, concurrency=1, max_deliveries=MAX_DELIVERIES,
                         claim_idle=Duration(60), claim_interval=Duration(0.1))


async def test_an_entry_past_max_deliveries_is_dead_lettered_without_running(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """The ghost ran the entry 3 times (max-deliveries 3); c1's reclaim is its 4th delivery.
    Must hold: the handler never runs, the entry is in <stream>:dead with 4 deliveries and a
    max-deliveries reason, and nothing is left pending."""
    entry_id = left_by_a_dead_peer(r, stream, MAX_DELIVERIES)
    runs: list[str] = []
    consumer = consumer_of(client, stream, runs)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.dead_lettered == 1 or runs,
                    what="the entry dead-lettered or run")
    assert runs == [], f"an entry on delivery {MAX_DELIVERIES + 1} ran its handler"
    ((_, dead),) = r.xrange(f"{stream}:dead")
    assert dead[DEAD_ID.encode()] == entry_id.encode()
    assert dead[DEAD_DELIVERIES.encode()] == str(MAX_DELIVERIES + 1).encode()
    assert b"max-deliveries" in dead[DEAD_REASON.encode()]
    assert r.xpending(stream, GROUP)["pending"] == 0


async def test_the_last_allowed_delivery_still_runs(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """The ghost ran the entry twice; c1's reclaim is its 3rd delivery, the last allowed one.
    Must hold: the handler runs exactly once, the entry is acked, nothing is dead-lettered."""
    entry_id = left_by_a_dead_peer(r, stream, MAX_DELIVERIES - 1)
    runs: list[str] = []
    consumer = consumer_of(client, stream, runs)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 1 or consumer.stats.dead_lettered > 0,
                    what="the entry settled")
    assert runs == [entry_id], f"the last allowed delivery ran {len(runs)} times"
    assert consumer.stats.dead_lettered == 0
    assert not r.exists(f"{stream}:dead")
    assert r.xpending(stream, GROUP)["pending"] == 0
