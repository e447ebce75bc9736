"""Sync handlers on threads of their own, with the hops to and from them batched.

``anyio.to_thread.run_sync`` per event costs a limiter, a cancel scope, a future and a wake-up
of the event loop for every entry: at concurrency 64 a no-op sync handler ran at 0.08x a raw
loop (bench). Here the stream's threads (at most ``concurrency``, started when needed) take
events from one queue and each keeps taking while there are more; finished events are
collected and handed back to the loop in one call for as many as finished meanwhile.

Threads are woken sparingly: every thread woken per event made the loop and the threads fight
over the GIL (py-spy at concurrency 64: most of the time went to handing it over). An event
wakes a thread only when none is taking events; when events have waited ``HELP_AFTER`` behind
busy threads (handlers that block), more are woken, one per waiting event. Fast handlers thus
run on one thread after another's hand-off, and blocking ones still overlap up to
``concurrency``, each starting at most ``HELP_AFTER`` late.

The semantics are anyio's without abandoning: up to ``concurrency`` handlers run at once, each
in a copy of the caller's context, and a worker that is cancelled (the grace ran out, a lost
lease) still waits for its handler to return, since a thread cannot be stopped.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import anyio

from edged.events import Event

# How long an event may wait behind busy threads before another thread is woken for it.
HELP_AFTER = 0.002

_Job = tuple[asyncio.Future[Any], Event, contextvars.Context, float]
_Done = tuple[asyncio.Future[Any], Any, BaseException | None]


class ThreadRunner:
    def __init__(self, fn: Callable[[Event], Any], size: int, name: str) -> None:
        self._fn = fn
        self._size = size
        self._name = name
        self._lock = threading.Lock()
        # Under the lock: the events waiting for a thread (with when they came), the threads
        # started, those taking events (woken or working) and those asleep.
        self._jobs: deque[_Job] = deque()
        self._wakeup = threading.Condition(self._lock)
        self._threads = 0
        self._active = 0
        self._asleep = 0
        self._check_due = False  # a look at events waiting behind busy threads is scheduled
        self._done: deque[_Done] = deque()
        self._handing_back = False  # a hand-back to the loop is scheduled and has not run yet
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, event: Event) -> Any:
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        now = loop.time()
        with self._lock:
            self._jobs.append((future, event, contextvars.copy_context(), now))
            if self._active == 0:
                self._wake_locked(1)
            elif not self._check_due:
                self._check_due = True
                loop.call_at(now + HELP_AFTER, self._help)
        try:
            # asyncio.shield, not a shielded anyio scope and a checkpoint after it: those cost
            # more than the thread hop itself (9 us of 15 per event, bench of this runner).
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # Cancelled (the grace ran out, a lost lease) while the thread runs: a thread cannot
            # be stopped, so wait for the handler to return, shielded from further
            # cancellations, then let the cancellation through, as for an async handler: the
            # entry is left pending, not settled by the handler's result.
            if not future.done():
                with anyio.CancelScope(shield=True):
                    await asyncio.wait((future,))
            if not future.cancelled():
                future.exception()  # the outcome is dropped: do not report it as unretrieved
            raise

    def _wake_locked(self, wanted: int) -> None:
        """Set up to ``wanted`` more threads taking events: asleep ones first, then new ones."""
        wanted = min(wanted, self._size - self._active)
        for _ in range(max(wanted, 0)):
            self._active += 1
            if self._asleep:
                self._asleep -= 1
                self._wakeup.notify()
            else:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}",
                                 daemon=True).start()

    def _help(self) -> None:
        """On the loop: events that waited ``HELP_AFTER`` behind busy threads get threads."""
        loop = self._loop
        with self._lock:
            self._check_due = False
            if not self._jobs or loop is None:
                return
            now = loop.time()
            waited = sum(1 for job in self._jobs if now - job[3] >= HELP_AFTER)
            self._wake_locked(waited)
            if len(self._jobs) > waited or (self._jobs and self._active < self._size):
                self._check_due = True
                loop.call_at(max(now, self._jobs[0][3]) + HELP_AFTER, self._help)

    def _work(self) -> None:
        fn, jobs, lock = self._fn, self._jobs, self._lock
        lock.acquire()
        try:
            while True:
                while jobs:
                    future, event, context, _ = jobs.popleft()
                    lock.release()
                    try:
                        result = context.run(fn, event)
                    except BaseException as exc:  # a handler's SystemExit fails its entry only
                        self._finished((future, None, exc))
                    else:
                        self._finished((future, result, None))
                    finally:
                        lock.acquire()
                # Nothing left: asleep until _wake_locked counts this thread active again.
                self._active -= 1
                self._asleep += 1
                self._wakeup.wait()
        finally:
            lock.release()

    def _finished(self, done: _Done) -> None:
        with self._lock:
            self._done.append(done)
            if self._handing_back:
                return  # the scheduled hand-back takes this one too
            self._handing_back = True
        loop = self._loop
        if loop is None:
            return
        with suppress(RuntimeError):  # the loop is closed: the daemon is exiting
            loop.call_soon_threadsafe(self._hand_back)

    def _hand_back(self) -> None:
        with self._lock:
            done = list(self._done)
            self._done.clear()
            self._handing_back = False
        for future, result, exc in done:
            if future.done():
                continue
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)
