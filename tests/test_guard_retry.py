"""Guards two promises about entries waiting for a retry (README "Delivery promises";
docs/design.md "Retries go through XAUTOCLAIM too", "Shutdown hands work back"):

- **A waiting retry stays leased until due**: with `Retry(after=N)` and a claim-idle far
  shorter than N, neither a peer's XAUTOCLAIM nor the consumer's own takes the entry early;
  it runs again only once N has passed. (The other retry tests use a claim-idle longer than
  their backoffs, where the lease never matters.)
- **A stop hands waiting retries back**: a consumer stopped while an entry waits for its
  retry hands it back as it is (delivery count unchanged, made to look long idle), so a
  peer's XAUTOCLAIM takes it at once instead of after claim-idle, and runs it as the next
  delivery. (No other test stops a consumer while a retry is scheduled.)

StreamConsumers in process against the session server; handlers record each run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import redis

from edged import Event, Retry
from edged.durations import Duration
from tests.support import Consuming, make_consumer, pending_rows, until

pytestmark = pytest.mark.anyio

GROUP = "edged"
DEADLINE = 15.0



@dataclass
class Run:
    consumer: str
    delivery: int
    started: float  # time.monotonic()
    finished: float | None = None


def add(r: redis.Redis, stream: str, body: bytes = b"{}") -> str:
    return r.xadd(stream, {"payload": body}).decode()


# --------------------------------------------------------------------------- leases


AFTER = 6.0  # Retry(after=AFTER) on the first delivery
CLAIM_IDLE = 1.5  # a quarter of AFTER: unleased, the entry would be taken after ~1.5 s


async def test_waiting_retry_keeps_its_lease_until_due(
    client: Any, r: redis.Redis, stream: str,
) -> None:
    """Two consumers of one group, claim-idle 1.5 s, claim-interval 100 ms (both reclaim all
    the time). The handler raises Retry(after=6) on delivery 1 and returns on later ones.

    Must hold: the entry runs exactly twice in all, deliveries 1 then 2, and the second run
    starts no earlier than the first one finished plus 90% of `after` (a semantic bound,
    only on the safe side: without the lease a reclaim takes it after about claim-idle,
    a quarter of `after`); no lease is reported lost; the PEL drains."""
    runs: dict[str, list[Run]] = {}

    def handler_for(name: str) -> Any:
        async def handler(event: Event) -> None:
            run = Run(name, event.delivery, time.monotonic())
            runs.setdefault(event.id, []).append(run)
            try:
                if event.delivery == 1:
                    raise Retry("not yet", after=AFTER)
            finally:
                run.finished = time.monotonic()
        return handler

    cfg: dict[str, Any] = {"concurrency": 2, "claim_idle": Duration(CLAIM_IDLE),
                           "claim_interval": Duration(0.1), "max_deliveries": 5}
    a = make_consumer(client, stream, handler_for("a"), consumer="a", **cfg)
    b = make_consumer(client, stream, handler_for("b"), consumer="b", **cfg)
    async with Consuming(a), Consuming(b):
        entry = add(r, stream)
        await until(lambda: len(runs.get(entry, [])) >= 2, DEADLINE + AFTER,
                    what=lambda: f"the entry run again after its retry: {runs}")
        await until(lambda: int(r.xpending(stream, GROUP)["pending"]) == 0, DEADLINE,
                    what="the PEL drained")
        # A last look for a run that should not be there: one more claim-idle and a pass.
        await anyio.sleep(CLAIM_IDLE + 0.2)
    first, second, *more = runs[entry]
    assert not more, f"the entry ran more than twice: {runs[entry]}"
    assert (first.delivery, second.delivery) == (1, 2), runs[entry]
    assert first.finished is not None
    waited = second.started - first.finished
    assert waited >= AFTER * 0.9, (
        f"the entry ran again {waited:.2f}s after its Retry(after={AFTER}), by consumer "
        f"{second.consumer}: taken while waiting for its retry (claim-idle {CLAIM_IDLE}s)")
    assert a.stats.lost_leases == b.stats.lost_leases == 0


# --------------------------------------------------------------------------- shutdown


async def test_stop_hands_a_waiting_retry_to_a_peer_at_once(
    client: Any, r: redis.Redis, stream: str,
) -> None:
    """Consumer c1 (claim-idle 60 s) runs an entry whose handler raises Retry(after=60) on
    delivery 1, and is stopped while the retry waits.

    Must hold: after c1's stop the entry is still pending for c1 with its delivery count
    unchanged (1) and an idle time past any claim-idle (handed back, not forgotten); a
    consumer c2 with the same 60 s claim-idle then runs it at once (far sooner than claim-idle
    or the retry's 60 s), as delivery 2, and acks it."""
    runs: list[tuple[str, int]] = []

    def handler_for(name: str) -> Any:
        async def handler(event: Event) -> None:
            runs.append((name, event.delivery))
            if event.delivery == 1:
                raise Retry("later", after=60)
        return handler

    cfg: dict[str, Any] = {"concurrency": 2, "claim_idle": Duration(60),
                           "claim_interval": Duration(0.1), "max_deliveries": 5}
    c1 = make_consumer(client, stream, handler_for("c1"), consumer="c1", **cfg)
    entry = add(r, stream)
    async with Consuming(c1):
        await until(lambda: c1.stats.retried == 1, DEADLINE, what="the retry scheduled")
    assert runs == [("c1", 1)]
    assert pending_rows(r, stream) == [{"id": entry, "consumer": "c1", "deliveries": 1}]
    (row,) = r.xpending_range(stream, GROUP, min="-", max="+", count=10)
    assert int(row["time_since_delivered"]) > 12 * 3600 * 1000, (
        f"the waiting retry was not handed back at the stop: idle {row['time_since_delivered']} ms")
    c2 = make_consumer(client, stream, handler_for("c2"), consumer="c2", **cfg)
    async with Consuming(c2):
        # Far below claim-idle (60 s): only a handed-back entry is taken this soon.
        await until(lambda: ("c2", 2) in runs, DEADLINE,
                    what=lambda: f"c2 running the handed-back entry as delivery 2: {runs}")
        await until(lambda: c2.stats.acked == 1, DEADLINE, what="c2 acked it")
    assert runs == [("c1", 1), ("c2", 2)]
    assert pending_rows(r, stream) == []
