"""edged.consume.workqueue.WorkQueue: the reader's batch handed to the stream's workers.

WorkQueue is built on asyncio futures, so these run on the asyncio backend (conftest's
``anyio_backend``). Idle workers are asyncio tasks parked in ``get()``; the tests wait for them
to park (``parked``) before they put, so that "which worker was woken" is well defined.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edged.consume.workqueue import WorkQueue
from tests.support import until

pytestmark = pytest.mark.anyio


def parked(q: WorkQueue[Any]) -> int:
    """Workers waiting in get() that nothing has woken yet."""
    return sum(1 for fut in q._waiters if not fut.done())


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Worker tasks a test started; any still running at teardown is cancelled."""
    started: list[asyncio.Task[Any]] = []
    yield started
    for t in started:
        t.cancel()
    await asyncio.gather(*started, return_exceptions=True)


def worker(tasks: list[asyncio.Task[Any]], q: WorkQueue[object]) -> asyncio.Task[Any]:
    """A worker that takes one entry (or None once the queue is closed)."""
    t: asyncio.Task[Any] = asyncio.get_running_loop().create_task(q.get())
    tasks.append(t)
    return t


async def test_fifo_order() -> None:
    q: WorkQueue[int] = WorkQueue()
    q.put_many([1, 2])
    q.put_many([3, 4, 5])
    assert len(q) == 5
    assert [await q.get() for _ in range(5)] == [1, 2, 3, 4, 5]
    assert len(q) == 0


async def test_one_put_wakes_one_idle_worker_which_wakes_the_next(
    tasks: list[asyncio.Task[Any]],
) -> None:
    """Three idle workers, a batch of two: put_many wakes exactly one (the first to wait);
    that worker takes the first entry and, as one remains, wakes the next, which takes it.
    The third is never woken and still waits; close() then gives it None."""
    q: WorkQueue[object] = WorkQueue()
    w = [worker(tasks, q) for _ in range(3)]
    await until(lambda: parked(q) == 3, what="three idle workers")

    q.put_many(["a", "b"])
    assert parked(q) == 2, "put_many must wake exactly one idle worker"
    assert not any(t.done() for t in w)

    await until(lambda: w[0].done() and w[1].done(), what="two workers served")
    assert (w[0].result(), w[1].result()) == ("a", "b")
    assert not w[2].done() and parked(q) == 1, "a worker was woken with nothing left to take"
    assert len(q) == 0

    assert q.close() == []
    assert await asyncio.wait_for(w[2], 15) is None


async def test_a_worker_that_never_suspends_runs_through_the_batch(
    tasks: list[asyncio.Task[Any]],
) -> None:
    """Two idle workers whose handler never suspends: the first one woken takes the whole
    batch without a task switch; the other, woken to help, finds nothing and waits again."""
    q: WorkQueue[int] = WorkQueue()
    got: dict[str, list[int]] = {"A": [], "B": []}

    async def loop(name: str) -> None:
        while (item := await q.get()) is not None:
            got[name].append(item)  # no await: the handler does not suspend

    loop_tasks = [asyncio.get_running_loop().create_task(loop(n)) for n in ("A", "B")]
    tasks.extend(loop_tasks)
    await until(lambda: parked(q) == 2, what="two idle workers")
    q.put_many([1, 2, 3, 4, 5])
    await until(lambda: len(got["A"]) + len(got["B"]) == 5 and parked(q) == 2,
                what="the batch taken and both workers idle again")
    assert got == {"A": [1, 2, 3, 4, 5], "B": []}
    q.close()
    await asyncio.wait_for(asyncio.gather(*loop_tasks), 15)


async def test_close_returns_unstarted_entries_and_releases_every_waiter(
    tasks: list[asyncio.Task[Any]],
) -> None:
    """Two idle workers; a batch arrives (one worker woken, not yet run) and the queue is
    closed before the loop runs again. close() returns the whole batch (none was started);
    both workers, the woken one too, get None, and so does any later get()."""
    q: WorkQueue[object] = WorkQueue()
    w = [worker(tasks, q) for _ in range(2)]
    await until(lambda: parked(q) == 2, what="two idle workers")
    q.put_many([1, 2, 3])
    assert parked(q) == 1
    assert q.close() == [1, 2, 3]
    assert len(q) == 0
    assert await asyncio.wait_for(asyncio.gather(*w), 15) == [None, None]
    assert await q.get() is None
    q.put_many([4])  # a late put after close hands nothing out
    assert await q.get() is None


async def test_close_with_no_waiters_returns_what_is_queued() -> None:
    q: WorkQueue[int] = WorkQueue()
    q.put_many([7, 8])
    assert await q.get() == 7
    assert q.close() == [8]
    assert await q.get() is None


async def test_a_woken_worker_cancelled_before_it_runs_passes_the_wake_up_on(
    tasks: list[asyncio.Task[Any]],
) -> None:
    """Workers A and B idle; one entry arrives and wakes A; A is cancelled before it runs.
    B must be woken in its place and take the entry (else it would sit in the queue while a
    worker idles)."""
    q: WorkQueue[object] = WorkQueue()
    a, b = worker(tasks, q), worker(tasks, q)
    await until(lambda: parked(q) == 2, what="two idle workers")
    q.put_many(["x"])
    assert parked(q) == 1  # A woken, B still waiting
    a.cancel()
    assert await asyncio.wait_for(b, 15) == "x"
    assert a.cancelled()
    assert len(q) == 0 and q._waking == 0


async def test_a_cancelled_idle_worker_is_skipped(tasks: list[asyncio.Task[Any]]) -> None:
    """A worker cancelled while idle (never woken) leaves the line: the next entry goes to the
    worker behind it."""
    q: WorkQueue[object] = WorkQueue()
    a = worker(tasks, q)
    await until(lambda: parked(q) == 1, what="A idle")
    a.cancel()
    await until(lambda: a.done(), what="A cancelled")
    b = worker(tasks, q)
    await until(lambda: parked(q) == 1, what="B idle")
    q.put_many(["y"])
    assert await asyncio.wait_for(b, 15) == "y"
    assert q._waking == 0
