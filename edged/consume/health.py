"""Whether one stream is healthy, and if not, what Redis said and where.

Redis being away (connection refused, timeouts, READONLY during a failover) is not kept here:
that is ``connected`` in the state, and every loop just waits and reconnects. This is for the
errors waiting alone does not fix: WRONGTYPE (the key is not a stream), NOPERM (the ACL user
lost a permission), a reply edged does not understand. Such an error *degrades* the stream: it
is logged at ERROR once per change (not once per retry), retried with a capped backoff, shown
by every observer (``/readyz``, ``STATUS=``, ``edged status``, ``edged_stream_degraded``), and
cleared by the next success of the same operation. Other streams of the daemon never notice.

The record outlives a restart of the stream's parts (see consumer.py), so counters and the
"degraded since" time stay true across it.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import (
    ExecAbortError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
)

from edged.backoff import Backoff

log = logging.getLogger("edged.consumer")

# Retrying a stream whose key is the wrong type more often than this helps nobody, and an
# operator who fixed the cause should not wait longer than this for the stream to resume.
DEGRADED_RETRY_CAP = 5.0


class StreamHealth:
    def __init__(self, stream: str, group: str) -> None:
        self.stream = stream
        self.group = group
        self.problems: dict[str, str] = {}
        """What is failing now: operation -> "COMMAND key: error"; empty when healthy."""
        self.since: float | None = None  # monotonic time the stream became degraded
        self.last_error: str | None = None  # kept after recovery, for `edged status`
        self.errors = 0  # every failure counted, for edged_stream_errors_total
        self.backoff = Backoff(base=0.5, cap=DEGRADED_RETRY_CAP)
        self._expires: dict[str, float] = {}  # operation -> when its problem is forgotten

    @property
    def degraded(self) -> bool:
        self._expire()
        return bool(self.problems)

    def describe(self) -> str:
        """One line: every failing operation, or "" when healthy."""
        self._expire()
        return "; ".join(self.problems.values())

    def failed(self, operation: str, command: str, key: str, exc: BaseException,
               expires_after: float | None = None) -> float:
        """Record a failure of ``operation``; returns how long to wait before trying again.

        ``expires_after``: for operations that may never run again here to prove they work (a
        dead-letter: the entry may be settled by a peer meanwhile), the problem is forgotten
        if it has not recurred within that many seconds.
        """
        self.errors += 1
        message = f"{command} {key}: {_error_text(exc)}"
        if self.problems.get(operation) != message:
            log.error("stream %s (group %s) degraded: %s failed: %s; retrying with backoff, "
                      "other streams go on", self.stream, self.group, operation, message)
        if not self.problems:
            self.since = time.monotonic()
        self.problems[operation] = message
        self.last_error = message
        if expires_after is None:
            self._expires.pop(operation, None)
        else:
            self._expires[operation] = time.monotonic() + expires_after
        return self.backoff.next_delay()

    def ok(self, *operations: str) -> None:
        """``operations`` worked: clear their problems; the stream resumes when none is left."""
        self._clear([op for op in operations if op in self.problems], "works again")

    def _expire(self) -> None:
        if self._expires:
            now = time.monotonic()
            self._clear([op for op, at in self._expires.items() if at <= now], "did not recur")

    def _clear(self, operations: list[str], why: str) -> None:
        for op in operations:
            self.problems.pop(op, None)
            self._expires.pop(op, None)
        if not operations or self.problems:
            return
        took = time.monotonic() - (self.since or time.monotonic())
        self.since = None
        self.backoff.reset()
        log.warning("stream %s (group %s): resumed after %.1fs degraded (%s %s)",
                    self.stream, self.group, took, " and ".join(operations), why)


# redis-py drops the error code of the replies it has a class for; operators know the code.
_CODES: dict[type[BaseException], str] = {
    NoPermissionError: "NOPERM",
    NoScriptError: "NOSCRIPT",
    OutOfMemoryError: "OOM",
    ExecAbortError: "EXECABORT",
}


def _error_text(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a task group's wrapper says nothing; its one error does
    text = str(exc).strip() or type(exc).__name__
    code = _CODES.get(type(exc))
    if code:
        return f"{code} {text}"
    return text if text.split(" ", 1)[0].isupper() else f"{type(exc).__name__}: {text}"
