"""edged.consume.acker.Acker against the real server: fenced acks, settle, retries, close.

Entries are read with XREADGROUP as consumer c1 (so they are pending for it), then the acker
acks them on c1's behalf; the outcome is read back from XPENDING.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from edged.consume.acker import Acker
from edged.consume.stats import StreamStats
from edged.scripts import Scripts
from tests.servers import Server
from tests.support import edged_client, pending_rows, until

pytestmark = pytest.mark.anyio

GROUP = "edged"


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Any]:
    c = edged_client(server.url)
    yield c
    await c.aclose()


class Done:
    """on_done: records each batch of ids whose slots the acker handed back."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, ids: list[str]) -> None:
        self.batches.append(list(ids))

    @property
    def ids(self) -> list[str]:
        return [i for b in self.batches for i in b]


def make_acker(client: Any, stream: str, done: Done, consumer: str = "c1") -> tuple[Acker, StreamStats]:
    stats = StreamStats(stream, GROUP)
    return Acker(Scripts(client), stream, GROUP, consumer, stats, done, others=10), stats


def read_as_c1(r: redis.Redis, stream: str, n: int) -> list[str]:
    ids = [r.xadd(stream, {"payload": str(i)}).decode() for i in range(n)]
    r.xgroup_create(stream, GROUP, id="0")
    r.xreadgroup(GROUP, "c1", {stream: ">"}, count=n)
    return ids


async def test_acks_only_what_the_consumer_still_owns(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """Five entries read by c1; one of them XCLAIMed by c2 (as a peer's reclaim would). The
    acker acks all five for c1: four are acked, the claimed one is counted in stale_acks and
    stays pending for c2 with its delivery count untouched; on_done gets all five."""
    ids = read_as_c1(r, stream, 5)
    r.xclaim(stream, GROUP, "c2", 0, [ids[2]])
    before = pending_rows(r, stream)
    done = Done()
    acker, stats = make_acker(client, stream, done)
    async with anyio.create_task_group() as tg:
        tg.start_soon(acker.run)
        for i in ids:
            acker.add(i)
        await until(lambda: sorted(done.ids) == sorted(ids), what="every id settled")
        acker.close()
    assert (stats.acked, stats.stale_acks) == (4, 1)
    assert pending_rows(r, stream) == [row for row in before if row["id"] == ids[2]]
    assert pending_rows(r, stream)[0]["consumer"] == "c2"


async def test_settle_hands_the_sent_ids_to_on_done(client: Any, stream: str) -> None:
    """settle() counts acked and stale and calls on_done with exactly the ids sent (acked or
    not: their slots are free either way); a carried ack that raised calls nothing yet."""
    done = Done()
    acker, stats = make_acker(client, stream, done)
    acker.settle(["1-0", "2-0", "3-0"], 2)
    assert done.batches == [["1-0", "2-0", "3-0"]]
    assert (stats.acked, stats.stale_acks) == (2, 1)
    acker.settle_carried(["4-0"], 1)
    assert done.batches[-1] == ["4-0"] and stats.acked == 3
    acker.settle_carried(["5-0"], RedisConnectionError("gone"))
    assert len(done.batches) == 2, "a failed ack must not free its slots"
    assert acker.pending == 0  # put back for the acker itself, not for the reader to carry
    assert acker.take() == []


async def test_ids_put_back_after_a_failed_carried_ack_are_retried_by_run(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """The reader's pipelined ack of three ids failed (settle_carried with the error): run()
    sends them again; they are acked and handed to on_done."""
    ids = read_as_c1(r, stream, 3)
    done = Done()
    acker, stats = make_acker(client, stream, done)
    acker.settle_carried(ids, RedisConnectionError("connection reset"))
    assert done.ids == []
    async with anyio.create_task_group() as tg:
        tg.start_soon(acker.run)
        await until(lambda: sorted(done.ids) == sorted(ids), what="the put-back ids acked")
        acker.close()
    assert stats.acked == 3
    assert pending_rows(r, stream) == []


async def test_run_retries_an_ack_that_failed_on_the_server(
    client: Any, r: redis.Redis, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The acker's own ack fails on the server (NOGROUP: the group is not there yet); run()
    keeps the ids and retries with backoff. Once the group exists and the entries are pending
    for c1, the retry acks them."""
    caplog.set_level(logging.WARNING, logger="edged.ack")
    ids = [r.xadd(stream, {"payload": str(i)}).decode() for i in range(3)]
    done = Done()
    acker, stats = make_acker(client, stream, done)
    async with anyio.create_task_group() as tg:
        tg.start_soon(acker.run)
        for i in ids:
            acker.add(i)
        await until(lambda: "ack failed" in caplog.text, what="a failed ack")
        assert done.ids == []
        r.xgroup_create(stream, GROUP, id="0")
        r.xreadgroup(GROUP, "c1", {stream: ">"}, count=3)
        await until(lambda: sorted(done.ids) == sorted(ids), timeout=20, what="the retry acked")
        acker.close()
    assert stats.acked == 3 and stats.stale_acks == 0
    assert pending_rows(r, stream) == []


async def test_close_flushes_what_is_left_and_run_returns(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """Ids finished and put back, then close() before run() even started: run() acks all of
    them and returns by itself."""
    ids = read_as_c1(r, stream, 4)
    done = Done()
    acker, stats = make_acker(client, stream, done)
    for i in ids[:3]:
        acker.add(i)
    acker.put_back(ids[3:])
    acker.close()
    with anyio.fail_after(15):
        await acker.run()
    assert sorted(done.ids) == sorted(ids)
    assert stats.acked == 4
    assert pending_rows(r, stream) == []


async def test_close_of_an_idle_acker_ends_run(client: Any, stream: str) -> None:
    done = Done()
    acker, _ = make_acker(client, stream, done)
    async with anyio.create_task_group() as tg:
        finished = anyio.Event()

        async def go() -> None:
            await acker.run()
            finished.set()

        tg.start_soon(go)
        acker.close()
        with anyio.fail_after(15):
            await finished.wait()
    assert done.batches == []


async def test_close_gives_up_after_the_final_attempts(
    client: Any, r: redis.Redis, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing while every ack fails (no group): run() returns after ``final_attempts`` and
    says the entries stay pending; nothing was handed to on_done."""
    caplog.set_level(logging.WARNING, logger="edged.ack")
    entry = r.xadd(stream, {"payload": "x"}).decode()
    done = Done()
    acker, stats = make_acker(client, stream, done)
    acker.add(entry)
    acker.close()
    with anyio.fail_after(15):
        await acker.run(final_attempts=2)
    assert done.batches == [] and stats.acked == 0
    assert "could not be acked" in caplog.text
