"""One consumer subprocess and the measurement of how fast it drains a preloaded stream.

Every contender runs in its own process so none shares the harness's interpreter or event loop;
the harness only polls ``XINFO GROUPS`` (a cheap O(groups) command) every ``POLL_INTERVAL``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

from bench.stream import GroupState, fresh_stream, group_state

POLL_INTERVAL = 0.02
STOP_GRACE = 30.0
REPO_ROOT = Path(__file__).resolve().parent.parent


class ContenderFailed(Exception):
    """The contender did not drain the stream; the message goes into the table."""


@dataclass
class Result:
    contender: str
    settings: str
    entries: int
    """How many entries were preloaded."""
    measured: int = 0
    """Entries delivered inside the timed window: ``entries`` minus those read before it opened."""
    seconds: float | None = None
    startup_seconds: float | None = None
    """From spawning the process to the first delivery the harness saw; not in the rate."""
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.measured / self.seconds


def subprocess_env() -> dict[str, str]:
    """The parent's environment with the repo root importable, for ``bench.*`` modules."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Consumer:
    """A consumer process whose combined output goes to a temp file, read back on failure."""

    def __init__(self, argv: Sequence[str], extra_env: dict[str, str] | None = None) -> None:
        # Lives as long as the process; closed in stop().
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env={**subprocess_env(), **(extra_env or {})},
            )
        except OSError as exc:
            self._log.close()
            raise ContenderFailed(f"cannot start {argv[0]}: {exc.strerror}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ContenderFailed(f"exited with code {self.proc.returncode}: {self.output_tail()}")

    def output_tail(self, limit: int = 120) -> str:
        self._log.seek(0)
        lines = [ln.strip() for ln in self._log.read().decode(errors="replace").splitlines()]
        last = next((ln for ln in reversed(lines) if ln), "no output")
        return last if len(last) <= limit else last[: limit - 3] + "..."

    def stop(self) -> str | None:
        """SIGTERM, then SIGKILL after ``STOP_GRACE``; returns a note when the stop was unclean."""
        note = None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                note = f"did not stop within {STOP_GRACE:.0f} s of SIGTERM: killed"
        rc = self.proc.returncode
        if note is None and rc not in (0, -signal.SIGTERM):
            note = f"exit code {rc} after SIGTERM: {self.output_tail()}"
        self._log.close()
        return note


def wait_for(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: Consumer,
    deadline: float,
    done: Callable[[GroupState], bool],
    what: str,
) -> GroupState:
    """Poll the group until ``done``; fails when the process dies or the deadline passes."""
    while True:
        state = group_state(client, stream, group)
        if done(state):
            return state
        consumer.check_alive()
        if time.monotonic() > deadline:
            raise ContenderFailed(
                f"timeout waiting for {what} "
                f"(read {state.delivered}, pending {state.pending}): {consumer.output_tail()}"
            )
        time.sleep(POLL_INTERVAL)


def measure_drain(
    client: redis.Redis,
    result: Result,
    *,
    stream: str,
    group: str,
    argv: Sequence[str],
    timeout: float,
    on_drained: Callable[[Consumer], None] | None = None,
) -> Result:
    """Preload, start the consumer, time the drain; failures are recorded on ``result``.

    The timed window opens at the first poll that sees deliveries (t0, with c0 entries already
    read) and closes at the first poll that sees everything read and acked (t1); the rate is
    ``(N - c0) / (t1 - t0)``. Process start-up and imports are thus excluded for every contender
    alike, and both ends are sampled by the same poll, so no extrapolation is needed.
    """
    entries = result.entries
    last_id = fresh_stream(client, stream, group, entries)
    consumer: Consumer | None = None
    try:
        consumer = Consumer(argv)
        deadline = consumer.started + timeout
        first = wait_for(
            client,
            stream,
            group,
            consumer,
            deadline,
            lambda s: s.delivered > 0 or s.pending > 0,
            "the first delivery",
        )
        t0 = time.monotonic()
        result.startup_seconds = t0 - consumer.started
        if first.drained(entries, last_id):
            raise ContenderFailed("drained before the first poll; use more --entries")
        wait_for(
            client,
            stream,
            group,
            consumer,
            deadline,
            lambda s: s.drained(entries, last_id),
            "the drain",
        )
        result.seconds = time.monotonic() - t0
        result.measured = entries - first.delivered
        if on_drained is not None:
            on_drained(consumer)
    except ContenderFailed as exc:
        result.error = str(exc)
    finally:
        if consumer is not None and (note := consumer.stop()):
            result.notes.append(note)
        # Free the server's memory before the next contender; nothing reads this stream again.
        client.delete(stream)
    return result
