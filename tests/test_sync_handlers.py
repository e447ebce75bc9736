"""Sync handlers on the stream's own threads (edged/handlers/threads.py), against a real server.

The batched thread hand-off must keep what a sync handler was promised: up to ``concurrency``
of them at once (blocking handlers overlap), never more, outcomes by exception as for async
handlers, the caller's context, and a worker that waits for its handler across a cancellation.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

import anyio
import pytest
import redis

from edged import Event, Reject, Retry
from edged.durations import Duration
from edged.handlers.threads import ThreadRunner
from tests.support import Consuming, make_consumer, until

pytestmark = pytest.mark.anyio

GROUP = "edged"



def add_many(r: redis.Redis, stream: str, n: int) -> list[str]:
    return [r.xadd(stream, {"payload": b'{"n": %d}' % i}).decode() for i in range(n)]


async def test_blocking_sync_handlers_run_concurrency_at_once_and_never_more(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """A barrier of `concurrency` parties only opens if that many handlers block at once; the
    running count never passes `concurrency`, and every entry is acked."""
    concurrency = 6
    barrier = threading.Barrier(concurrency, timeout=20)
    lock = threading.Lock()
    running = [0, 0]  # now, most

    def handler(event: Event) -> None:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            if int(event.payload["n"]) < concurrency:
                barrier.wait()  # the first `concurrency` entries must all be running together
            else:
                time.sleep(0.002)
        finally:
            with lock:
                running[0] -= 1

    runner = ThreadRunner(handler, concurrency, "test")
    consumer = make_consumer(client, stream, runner, concurrency=concurrency)
    add_many(r, stream, 60)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 60, what="every entry acked")
    assert not barrier.broken
    assert running[1] == concurrency
    assert r.xpending(stream, GROUP)["pending"] == 0


async def test_a_sync_handlers_exceptions_are_its_outcomes(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """Reject dead-letters, Retry and any other exception leave the entry for a retry, from a
    thread as from the loop."""
    def handler(event: Event) -> None:
        n = int(event.payload["n"])
        if n == 0:
            raise Reject("no")
        if n == 1 and event.delivery == 1:
            raise Retry("later", after=0.05)
        if n == 2 and event.delivery == 1:
            raise ValueError("boom")

    consumer = make_consumer(client, stream, ThreadRunner(handler, 4, "test"), concurrency=4,
                             retry_backoff=Duration(0.05), claim_idle=Duration(2),
                             claim_interval=Duration(0.1))
    add_many(r, stream, 4)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 3 and consumer.stats.dead_lettered == 1,
                    what="three acked, one dead-lettered")
    assert consumer.stats.retried == 1
    assert consumer.stats.failed == 1
    assert r.xlen(f"{stream}:dead") == 1


async def test_sync_handlers_see_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    runner = ThreadRunner(lambda event: (var.get(), threading.get_ident()), 2, "test")
    var.set("from the caller")
    value, thread = await runner(Event(stream="s", group="g", id="1-0", fields={}, payload=None,
                                       delivery=1))
    assert value == "from the caller"
    assert thread != threading.get_ident()


async def test_a_cancelled_caller_waits_for_its_running_handler() -> None:
    """A thread cannot be stopped: the cancelled worker returns only once its handler has, so
    the entry's outcome is never settled while the handler still runs, and the cancellation
    still reaches the worker (the entry stays pending instead of being settled by the result)."""
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def handler(event: Event) -> str:
        started.set()
        release.wait(20)
        finished.set()
        return "done"

    async def cancel_then_release(scope: anyio.CancelScope) -> None:
        await anyio.to_thread.run_sync(started.wait, 20)
        scope.cancel()
        # Released from outside the cancelled scope, a while later: a caller that did not wait
        # for its handler would be back before then.
        threading.Timer(0.2, release.set).start()

    runner = ThreadRunner(handler, 1, "test")
    event = Event(stream="s", group="g", id="1-0", fields={}, payload=None, delivery=1)
    returned = False
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_then_release, scope)
            await runner(event)
            returned = True
    assert finished.is_set()  # the await above ended only after the handler did
    assert scope.cancelled_caught
    assert not returned  # the result did not reach the caller: it was cancelled
