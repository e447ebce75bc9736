"""Reclaim (XAUTOCLAIM) keeps the delivery promises the reader keeps.

Guards three promises on the reclaim path (edged/consume/reclaim.py, lua/reclaim.lua):

- never more than ``concurrency`` entries held: a reclaim step claims at most the free worker
  slots, also while some workers are busy and a dead peer left many idle entries;
- an entry still running here is never started a second time, even when it looks idle to this
  consumer's own reclaim (reclaim skips ids in flight locally);
- a live peer's entry (idle below claim-idle) is never taken: XAUTOCLAIM's min-idle is the
  fence between consumers.

In process, against the session's real server. Entries are made to look idle with
``XCLAIM ... IDLE`` (no waiting for claim-idle), and every wait is a condition with a deadline.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
import redis

from edged import Event
from edged.durations import Duration
from tests.support import Consuming, make_consumer, pending_rows, until

pytestmark = pytest.mark.anyio

GROUP = "edged"
LONG_IDLE_MS = 3_600_000  # what XCLAIM ... IDLE sets: far past any claim-idle used here
# Long enough that no lease renewal (every quarter of it) nor a claim by idle time happens
# during a test: what is reclaimed is exactly what the test aged.
CLAIM_IDLE = Duration(60)
CLAIM_INTERVAL = Duration(0.1)



def add(r: redis.Redis, stream: str, payload: bytes = b"{}") -> str:
    return r.xadd(stream, {"payload": payload}).decode()


def age(r: redis.Redis, stream: str, owner: str, ids: list[str]) -> None:
    """Make ``ids`` look idle for an hour, owned by ``owner``, delivery count unchanged."""
    r.xclaim(stream, GROUP, owner, 0, ids, idle=LONG_IDLE_MS, justid=True)


def held_by(r: redis.Redis, stream: str, consumer: str) -> list[str]:
    rows = r.xpending_range(stream, GROUP, "-", "+", 1000, consumername=consumer)
    return [row["message_id"].decode() for row in rows]


async def test_reclaim_claims_no_more_than_the_free_slots(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """Concurrency 4; two handlers of c1 are busy (blocked) when the 20 entries a dead peer
    ("ghost") left pending become idle. Must hold: c1's reclaim takes exactly the two free
    slots' worth (c1 holds 4 pending, 2 reclaimed), and while everything drains c1 never holds
    more than 4 pending; all 22 entries run exactly once and are acked."""
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ghosts = [add(r, stream) for _ in range(20)]
    r.xreadgroup(GROUP, "ghost", {stream: ">"}, count=20)
    busy = [add(r, stream), add(r, stream)]
    gate = anyio.Event()
    started: list[str] = []

    async def handler(event: Event) -> None:
        started.append(event.id)
        await gate.wait()

    consumer = make_consumer(client, stream, handler, concurrency=4, claim_idle=CLAIM_IDLE,
                             claim_interval=CLAIM_INTERVAL)
    async with Consuming(consumer):
        await until(lambda: sorted(started) == sorted(busy), what="the two busy handlers running")
        assert held_by(r, stream, "c1") == busy
        age(r, stream, "ghost", ghosts)
        await until(lambda: consumer.stats.reclaimed > 0, what="a reclaim step")
        await until(lambda: len(started) == 4, what="the reclaimed entries started")
        mine = held_by(r, stream, "c1")
        assert len(mine) == 4, f"c1 holds {len(mine)} entries with concurrency 4: {mine}"
        assert consumer.stats.reclaimed == 2
        assert set(busy) < set(mine) and set(mine) - set(busy) < set(ghosts)
        peak = 0

        def drained() -> bool:
            nonlocal peak
            peak = max(peak, len(held_by(r, stream, "c1")))
            return r.xpending(stream, GROUP)["pending"] == 0

        gate.set()
        await until(drained, timeout=20, what=lambda: f"the PEL drained; started {len(started)}")
    assert peak <= 4, f"c1 held {peak} entries at once with concurrency 4"
    assert sorted(started) == sorted([*ghosts, *busy])
    assert consumer.stats.acked == 22


async def test_reclaim_never_starts_an_entry_still_running_here(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """c1's handler runs entry E (blocked); E is made to look idle to c1's own reclaim, and a
    dead peer's entry M (after E) with it, so that one XAUTOCLAIM step claims both. Must hold:
    the step did claim E (Redis counts its second delivery), yet E's handler is not started
    again while it runs, M is; once released, E is acked after its one run."""
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    release = anyio.Event()
    started: list[str] = []

    async def handler(event: Event) -> None:
        started.append(event.id)
        if event.payload.get("hold"):
            await release.wait()

    consumer = make_consumer(client, stream, handler, concurrency=4, claim_idle=CLAIM_IDLE,
                             claim_interval=CLAIM_INTERVAL)
    held = add(r, stream, b'{"hold": true}')
    async with Consuming(consumer):
        await until(lambda: started == [held], what="E's handler running")
        with r.pipeline(transaction=True) as pipe:  # M goes to the ghost, not to c1's read
            pipe.xadd(stream, {"payload": b"{}"})
            pipe.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
            marker = pipe.execute()[0].decode()
        assert held_by(r, stream, "ghost") == [marker]
        with r.pipeline(transaction=True) as pipe:  # aged together: one step claims both
            pipe.xclaim(stream, GROUP, "c1", 0, [held], idle=LONG_IDLE_MS, justid=True)
            pipe.xclaim(stream, GROUP, "ghost", 0, [marker], idle=LONG_IDLE_MS, justid=True)
            pipe.execute()
        # M is queued behind E if E was queued again: once M started, E would have too.
        await until(lambda: marker in started, what="the peer's entry reclaimed and started")
        rows = {row["id"]: row for row in pending_rows(r, stream)}
        assert rows[held]["deliveries"] == 2, "the reclaim step did not claim E: no proof"
        assert started.count(held) == 1, f"E started twice while running: {started}"
        release.set()
        await until(lambda: r.xpending(stream, GROUP)["pending"] == 0, what="the PEL drained")
    assert sorted(started) == sorted([held, marker])
    assert consumer.stats.acked == 2


async def test_reclaim_leaves_a_live_peers_entry_alone(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """A live peer just read entry P (idle far below claim-idle); a dead peer's entry M after it
    is idle. c1's reclaim scans both in one step. Must hold: c1 takes M only, and runs it as
    its second delivery (Redis's count: the dead peer's read, then the reclaim); P stays
    pending to the peer with one delivery and c1 never runs it."""
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    live = add(r, stream)
    r.xreadgroup(GROUP, "peer", {stream: ">"}, count=1)
    marker = add(r, stream)
    r.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
    age(r, stream, "ghost", [marker])
    started: list[tuple[str, int]] = []

    async def handler(event: Event) -> None:
        started.append((event.id, event.delivery))

    consumer = make_consumer(client, stream, handler, concurrency=4, claim_idle=CLAIM_IDLE,
                             claim_interval=CLAIM_INTERVAL, consumer=f"c-{uuid.uuid4().hex[:6]}")
    async with Consuming(consumer):
        # M after P: if the step that took M had taken P, P was started first.
        await until(lambda: consumer.stats.acked >= 1, what="the dead peer's entry handled")
    assert [i for i, _ in started] == [marker], f"c1 ran the live peer's entry {live}: {started}"
    assert started == [(marker, 2)]
    assert pending_rows(r, stream) == [{"id": live, "consumer": "peer", "deliveries": 1}]
