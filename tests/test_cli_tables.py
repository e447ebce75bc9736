"""Tables in an 80-column terminal (a real pseudo-terminal): no cell is ever wrapped, ids and
names stay whole, columns that do not fit are left out by priority and named, --wide shows
them all; piped output is one plain line per row; `--watch | head` ends quietly (issue
"The operator's day", finding 4)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import redis

from tests.servers import Server
from tests.support import edged_argv, run_edged
from tests.support import test_env as edged_env

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def in_terminal(*args: str, columns: int = 80) -> str:
    """Run `edged <args>` with a pseudo-terminal of ``columns`` as its stdout; its output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in edged_env().items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen(edged_argv(*args), stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=env, cwd=Path(__file__).parent.parent)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks)
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def _pending_setup(r: redis.Redis, stream: str) -> tuple[list[str], str]:
    consumer = "a-rather-long-consumer-name-on-host-edge-0042.example.internal"
    r.xgroup_create(stream, "edged", id="0", mkstream=True)
    ids = [r.xadd(stream, {"payload": b"{}"}).decode() for _ in range(3)]
    r.xreadgroup("edged", consumer, {stream: ">"})
    return ids, consumer


def test_pending_detail_at_80_columns_keeps_ids_and_names_whole(
        server: Server, r: redis.Redis, stream: str) -> None:
    ids, consumer = _pending_setup(r, stream)
    out = in_terminal("pending", stream, "--detail", "--url", server.url)
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    for entry_id in ids:
        assert entry_id in out, out  # whole, on one line
    assert consumer in out, out
    assert "not shown at 80 columns" in out and "--wide" in out, out

    wide = in_terminal("pending", stream, "--detail", "--url", server.url, "--wide")
    header = next(line for line in wide.splitlines() if line.startswith("ID"))
    assert header.split() == ["ID", "CONSUMER", "IDLE", "DELIVERIES", "AGE"], wide


def test_groups_and_status_at_80_columns_keep_the_verdict(
        server: Server, r: redis.Redis, stream: str) -> None:
    _pending_setup(r, stream)
    for argv in (["groups", stream], ["status"]):
        out = in_terminal(*argv, "--url", server.url, "--sample", "0s")
        # Table lines fit; the verdicts' reasons below the table are prose (": "), which the
        # terminal wraps like any text.
        table = [line for line in out.splitlines() if ": " not in line]
        assert all(len(line) <= 80 for line in table), out
        assert "VERDICT" in out and "LAG" in out, out


def test_piped_output_is_one_plain_line_per_row(
        server: Server, r: redis.Redis, stream: str) -> None:
    ids, consumer = _pending_setup(r, stream)
    out = run_edged("pending", stream, "--detail", "--url", server.url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "CONSUMER", "IDLE", "DELIVERIES", "AGE"]
    assert [line.split()[0] for line in lines[1:4]] == ids
    assert all(line.split()[1] == consumer for line in lines[1:4])
    assert "\x1b[" not in out.stdout


def test_watch_into_head_ends_quietly(server: Server, r: redis.Redis, stream: str) -> None:
    _pending_setup(r, stream)
    proc = subprocess.Popen(edged_argv("groups", stream, "--url", server.url, "--watch", "0.1",
                                       "--sample", "0s"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=edged_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does once it has its line
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == b""


def test_free_text_is_cut_before_a_name_or_the_readiness_is_left_out() -> None:
    """The status table of a daemon with a long name and many streams, at 80 columns: the
    name stays whole, READY stays, the streams are cut with an ellipsis, and what is left out
    is named."""
    from rich.console import Console

    from edged.cli.render import _fit, make_table

    headers = ("CONSUMER", "HOST", "PID", "VERSION", "UPTIME", "STREAMS", "IN FLIGHT",
               "PROCESSED", "FAILED", "DEAD LETTERED", "OUTBOX", "READY", "LAST BEAT")
    name = "edge-host-0042.example.internal"
    table = make_table(headers, [(name, "host-0042", 4242, "0.1.0", "3h", " ".join(
        f"stream-{i}/edged" for i in range(12)), 0, 10, 0, 0, "-", "yes", "1s ago")],
        drop=("VERSION", "PID", "UPTIME", "HOST", "DEAD LETTERED", "FAILED", "PROCESSED",
              "IN FLIGHT", "OUTBOX", "LAST BEAT"), shorten=("STREAMS",))
    fitted, hidden = _fit(table.edged_layout, 80)  # type: ignore[attr-defined]
    console = Console(width=80, highlight=False)
    with console.capture() as captured:
        console.print(fitted)
    lines = captured.get().splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), lines
    assert lines[0].split()[0] == "CONSUMER" and "READY" in lines[0]
    assert name in lines[1] and "…" in lines[1] and "yes" in lines[1], lines
    assert "VERSION" in hidden and "READY" not in hidden and "STREAMS" not in hidden
