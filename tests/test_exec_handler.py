"""Exec handlers (README "Handlers"): argv without a shell, payload on stdin, metadata in
EDGED_* variables, exit status mapped onto ack / retry / failure, timeouts kill the process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from edged import Event, Retry
from edged.config import ExecHandler, StreamConfig
from edged.durations import Duration
from edged.handlers import build_handler
from edged.keys import DEAD_ID, DEAD_REASON
from tests.support import Consuming, make_consumer, process_gone, until

pytestmark = pytest.mark.anyio

GROUP = "edged"

# argv: SCRIPT OUTDIR MODE [ARG...]. Writes OUTDIR/<EDGED_ID>.json with stdin, environment and
# arguments, then behaves as MODE says.
SCRIPT = r"""
import json, os, subprocess, sys, time
out, mode, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
record = {
    "stdin": sys.stdin.buffer.read().decode("latin-1"),
    "stream": os.environ.get("EDGED_STREAM"),
    "group": os.environ.get("EDGED_GROUP"),
    "id": os.environ.get("EDGED_ID"),
    "delivery": os.environ.get("EDGED_DELIVERY"),
    "args": rest,
}
name = os.environ.get("EDGED_ID", "none").replace("-", "_")
with open(os.path.join(out, name + ".tmp"), "w") as f:
    json.dump(record, f)
os.rename(os.path.join(out, name + ".tmp"), os.path.join(out, name + ".json"))
if mode == "ok":
    sys.exit(0)
if mode == "tempfail":
    sys.stderr.write("try later\n")
    sys.exit(75)
if mode == "fail":
    sys.stderr.write("some noise\n" * 50 + "boom\n")
    sys.exit(3)
"""

# argv: SCRIPT OUTDIR. Starts a grandchild `sleep 300 &`, records both pids, then sleeps.
HANG = """\
sleep 300 &
echo $! > "$1/grandchild.pid"
echo $$ > "$1/child.pid"
exec sleep 300
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "handler.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d



def exec_handler(stream: str, argv: list[str], timeout: float = 20.0, **cfg: Any) -> Any:
    spec = ExecHandler(exec=argv, timeout=Duration(timeout))
    return build_handler(StreamConfig(stream=stream, handler=spec, **cfg), 0)


def record_of(out: Path, entry_id: str) -> dict[str, Any]:
    return json.loads((out / (entry_id.replace("-", "_") + ".json")).read_text())


def event(stream: str, entry_id: str = "1-1", payload: bytes = b'{"x":1}', delivery: int = 3) -> Event:
    return Event(stream=stream, group=GROUP, id=entry_id, fields={"payload": payload},
                 payload=None, delivery=delivery)


def python() -> str:
    import sys

    return sys.executable


# --------------------------------------------------------------------------- the call itself


async def test_exec_gets_stdin_env_and_literal_argv(stream: str, script: Path, out: Path) -> None:
    """The program gets the raw payload bytes on stdin, EDGED_STREAM/GROUP/ID/DELIVERY in its
    environment, and its argv exactly as configured: no shell, so "$HOME" and "*" stay literal."""
    handler = exec_handler(stream, [python(), str(script), str(out), "ok", "$HOME", "*", "a b"])
    await handler(event(stream, "17-4", b'{"x": [1, 2]}\n', delivery=3))
    rec = record_of(out, "17-4")
    assert rec["stdin"] == '{"x": [1, 2]}\n'
    assert (rec["stream"], rec["group"], rec["id"], rec["delivery"]) == (stream, GROUP, "17-4", "3")
    assert rec["args"] == ["$HOME", "*", "a b"]


async def test_exec_exit_codes(stream: str, script: Path, out: Path) -> None:
    """Exit 0 returns; exit 75 raises Retry; exit 3 raises a failure (not Retry) whose message
    names the exit status and carries the stderr tail ("boom")."""
    base = [python(), str(script), str(out)]
    await exec_handler(stream, [*base, "ok"])(event(stream, "1-1"))
    with pytest.raises(Retry):
        await exec_handler(stream, [*base, "tempfail"])(event(stream, "1-2"))
    with pytest.raises(Exception) as info:
        await exec_handler(stream, [*base, "fail"])(event(stream, "1-3"))
    assert not isinstance(info.value, Retry)
    assert "boom" in str(info.value)
    assert "3" in str(info.value)


async def test_exec_missing_program_is_a_failure(stream: str, tmp_path: Path) -> None:
    """A program that does not exist is a handler failure with a message, not a crash."""
    with pytest.raises(Exception, match="nope") as info:
        await exec_handler(stream, [str(tmp_path / "nope")])(event(stream))
    assert not isinstance(info.value, Retry)


async def test_exec_timeout_kills_the_process_group(stream: str, tmp_path: Path) -> None:
    """The program starts a grandchild (`sleep 300 &`) and sleeps; the timeout is 0.5 s. Must
    hold: the call fails with "timed out" well before the sleeps end, and both the child and the
    grandchild are gone afterwards (the whole process group was killed)."""
    hang = tmp_path / "hang.sh"
    hang.write_text(HANG)
    handler = exec_handler(stream, ["/bin/sh", str(hang), str(tmp_path)], timeout=0.5)
    with anyio.fail_after(20), pytest.raises(Exception, match="timed out") as info:
        await handler(event(stream))
    assert not isinstance(info.value, Retry)
    child = int((tmp_path / "child.pid").read_text())
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    await until(lambda: process_gone(child), timeout=10, what=f"child {child} gone")
    await until(lambda: process_gone(grandchild), timeout=10, what=f"grandchild {grandchild} gone")


async def test_exec_exit_0_with_a_background_child_is_success(stream: str, tmp_path: Path) -> None:
    """The program starts `sleep 300 &` (which inherits its stderr) and exits 0 at once; the
    timeout is 3 s. Must hold: the call succeeds (exit 0 means ack), rather than waiting for the
    background child to close stderr and reporting a timeout."""
    script = tmp_path / "bg.sh"
    script.write_text('sleep 300 &\necho $! > "$1/bg.pid"\nexit 0\n')
    handler = exec_handler(stream, ["/bin/sh", str(script), str(tmp_path)], timeout=3)
    try:
        with anyio.fail_after(20):
            await handler(event(stream))
    finally:
        pid_file = tmp_path / "bg.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


# --------------------------------------------------------------------------- through a consumer


def pending(r: redis.Redis, stream: str) -> list[tuple[str, str, int]]:
    return [
        (row["message_id"].decode(), row["consumer"].decode(), int(row["times_delivered"]))
        for row in r.xpending_range(stream, GROUP, "-", "+", 100)
    ]


async def test_exec_exit_0_acks(client: Any, r: redis.Redis, stream: str, script: Path,
                                out: Path) -> None:
    """Through a consumer: exit 0 acks the entry (PEL empty) after the program saw the entry's
    id, stream, group, delivery 1 and payload."""
    handler = exec_handler(stream, [python(), str(script), str(out), "ok"])
    consumer = make_consumer(client, stream, handler, concurrency=2)
    ids = [r.xadd(stream, {"payload": b'{"n":%d}' % n}).decode() for n in range(3)]
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 3, what="three acks")
    for n, entry_id in enumerate(ids):
        rec = record_of(out, entry_id)
        assert rec["stdin"] == f'{{"n":{n}}}'
        assert (rec["stream"], rec["group"], rec["id"], rec["delivery"]) == (
            stream, GROUP, entry_id, "1")
    assert r.xpending(stream, GROUP)["pending"] == 0


async def test_exec_exit_75_leaves_entry_pending(client: Any, r: redis.Redis, stream: str,
                                                 script: Path, out: Path) -> None:
    """Through a consumer: exit 75 is a retry; the entry stays pending for c1, not dead-lettered."""
    handler = exec_handler(stream, [python(), str(script), str(out), "tempfail"])
    consumer = make_consumer(client, stream, handler, concurrency=1, max_deliveries=5)
    entry_id = r.xadd(stream, {"payload": b"{}"}).decode()
    async with Consuming(consumer):
        await until(lambda: consumer.stats.retried == 1, what="the retry counted")
    assert pending(r, stream) == [(entry_id, "c1", 1)]
    assert consumer.stats.acked == 0
    assert not r.exists(f"{stream}:dead")


async def test_exec_failure_on_last_delivery_dead_letters_with_stderr(
    client: Any, r: redis.Redis, stream: str, script: Path, out: Path
) -> None:
    """Through a consumer with max-deliveries=1: exit 3 with stderr ending in "boom" moves the
    entry to the dead-letter stream with "boom" in edged-reason, and acks it."""
    handler = exec_handler(stream, [python(), str(script), str(out), "fail"], max_deliveries=1)
    consumer = make_consumer(client, stream, handler, concurrency=1, max_deliveries=1)
    entry_id = r.xadd(stream, {"payload": b"{}", "source": b"test"}).decode()
    async with Consuming(consumer):
        await until(lambda: consumer.stats.dead_lettered == 1, what="the entry dead-lettered")
    ((_, dead),) = r.xrange(f"{stream}:dead")
    assert dead[DEAD_ID.encode()] == entry_id.encode()
    assert b"boom" in dead[DEAD_REASON.encode()]
    assert dead[b"source"] == b"test"
    assert r.xpending(stream, GROUP)["pending"] == 0
    assert consumer.stats.failed == 1


async def test_exec_cancelled_at_grace_end_kills_the_process_group(
    client: Any, r: redis.Redis, stream: str, tmp_path: Path
) -> None:
    """Through a consumer: the program (with a `sleep 300 &` grandchild) still runs when the
    shutdown grace (0.5 s) ends. Must hold: run() returns, the child and the grandchild are gone,
    and the entry stays pending for c1 (it is delivered again later, never lost)."""
    hang = tmp_path / "hang.sh"
    hang.write_text(HANG)
    handler = exec_handler(stream, ["/bin/sh", str(hang), str(tmp_path)], timeout=60)
    consumer = make_consumer(client, stream, handler, concurrency=1, read_block=0.1)
    entry_id = r.xadd(stream, {"payload": b"{}"}).decode()
    async with Consuming(consumer) as run:
        await until(lambda: (tmp_path / "child.pid").exists(), what="the program started")
        consumer.stop(anyio.current_time() + 0.5)
        with anyio.fail_after(10):
            await run.done.wait()
    child = int((tmp_path / "child.pid").read_text())
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    await until(lambda: process_gone(child), timeout=10, what=f"child {child} gone")
    await until(lambda: process_gone(grandchild), timeout=10, what=f"grandchild {grandchild} gone")
    assert consumer.stats.cancelled == 1
    assert pending(r, stream) == [(entry_id, "c1", 1)]
