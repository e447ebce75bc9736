"""Exec handlers: one child process per event, no shell.

The payload goes to stdin, metadata to EDGED_* variables. Exit 0 acks, 75 (EX_TEMPFAIL) asks for
a retry, anything else is a failure retried until max-deliveries. The child runs in its own
session so that a timeout or shutdown kills its whole process group, grandchildren included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

import anyio

from edged.codec import PAYLOAD_FIELD
from edged.events import Event, Retry

EX_TEMPFAIL = 75
STDERR_TAIL_BYTES = 2048


class ExecFailed(Exception):
    """The program exited non-zero (other than 75) or timed out; the message has its stderr tail."""


def _env(event: Event) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        EDGED_STREAM=event.stream,
        EDGED_GROUP=event.group,
        EDGED_ID=event.id,
        EDGED_DELIVERY=str(event.delivery),
    )
    return env


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(data: bytes) -> str:
    return data[-STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip()


async def run_exec(argv: Sequence[str], event: Event, time_limit: float) -> None:
    """Run ``argv`` for ``event``; returns on exit 0, raises Retry or ExecFailed otherwise."""
    stdin_data = event.fields.get(PAYLOAD_FIELD.decode(), b"")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=None,  # the program's output goes to the daemon's stdout (the journal)
            stderr=asyncio.subprocess.PIPE,
            env=_env(event),
            start_new_session=True,
        )
    except OSError as exc:
        raise ExecFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    stderr = b""
    try:
        with anyio.move_on_after(time_limit) as scope:
            _, stderr = await proc.communicate(stdin_data)
        if scope.cancelled_caught:
            _kill_group(proc)
            await proc.wait()
            raise ExecFailed(f"{argv[0]} timed out after {time_limit:g}s; process group killed")
    finally:
        if proc.returncode is None:  # cancelled at shutdown: leave no orphans behind
            _kill_group(proc)
    code = proc.returncode
    if code == 0:
        return
    tail = _tail(stderr)
    if code == EX_TEMPFAIL:
        raise Retry(f"{argv[0]} exited 75 (temporary failure): {tail}")
    raise ExecFailed(f"{argv[0]} exited {code}: {tail}")
