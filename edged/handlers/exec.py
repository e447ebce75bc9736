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

from edged.events import Event, Retry
from edged.keys import PAYLOAD_FIELD

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
    msgid = event.msgid
    if msgid is not None:  # published through an outbox: the id to drop duplicates by
        env["EDGED_MSGID"] = msgid
    return env


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(data: bytes) -> str:
    return data[-STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip()


async def _exited(proc: asyncio.subprocess.Process) -> None:
    """Return once the program has exited (its return code is known), pipes open or not."""
    delay = 0.001
    while proc.returncode is None:
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.025)


async def run_exec(argv: Sequence[str], event: Event, time_limit: float) -> None:
    """Run ``argv`` for ``event``; returns on exit 0, raises Retry or ExecFailed otherwise."""
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
    tail = bytearray()
    try:
        with anyio.move_on_after(time_limit) as scope:
            await _converse(proc, event.fields.get(PAYLOAD_FIELD, b""), tail)
        if scope.cancelled_caught:
            _kill_group(proc)
            await _exited(proc)
            raise ExecFailed(f"{argv[0]} timed out after {time_limit:g}s; process group killed")
    finally:
        if proc.returncode is None:  # cancelled at shutdown: leave no orphans behind
            _kill_group(proc)
        # Drop our ends of the pipes even if a background child still holds the others.
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()
    code = proc.returncode
    if code == 0:
        return
    why = _tail(bytes(tail))
    if code == EX_TEMPFAIL:
        raise Retry(f"{argv[0]} exited 75 (temporary failure): {why}")
    raise ExecFailed(f"{argv[0]} exited {code}: {why}")


async def _converse(proc: asyncio.subprocess.Process, stdin_data: bytes, tail: bytearray) -> None:
    """Feed stdin, keep the tail of stderr, and return once the program has exited."""
    stderr_closed = anyio.Event()

    async def feed_stdin() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin_data)
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the program does not read its stdin: its exit status decides

    async def read_stderr() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(4096):
            tail.extend(chunk)
            del tail[:-STDERR_TAIL_BYTES]
        stderr_closed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed_stdin)
        tg.start_soon(read_stderr)
        # The program's exit decides, not the pipe closing: a background child it started may
        # keep stderr open for much longer (and Process.wait() waits for the pipes too on 3.11).
        await _exited(proc)
        with anyio.move_on_after(0.1):  # what it wrote just before exiting
            await stderr_closed.wait()
        tg.cancel_scope.cancel()
