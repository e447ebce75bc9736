"""systemd integration: the notify protocol on a real datagram socket, and the log formats.

The daemon runs as a real `edged start` subprocess with $NOTIFY_SOCKET pointing at a socket
the test owns, the way systemd runs a `Type=notify` unit; the test reads what arrives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from edged.daemon.systemd import notify
from tests.servers import Server, free_port
from tests.support import DaemonProcess, wait_for, write_config
from tests.support import test_env as edged_env

GROUP = "edged"


class NotifySocket:
    """A bound AF_UNIX datagram socket and every message received on it, in order."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def lines(self) -> list[str]:
        return [line for m in self.drain() for line in m.split("\n")]

    def nothing_for(self, seconds: float) -> list[str]:
        """Messages that arrive within ``seconds`` (a deadline, expected to pass empty)."""
        before = len(self.drain())
        self.sock.settimeout(seconds)
        try:
            self.messages.append(self.sock.recv(4096).decode())
        except TimeoutError:
            pass
        finally:
            self.sock.setblocking(False)
        return self.messages[before:]


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, NotifySocket]]:
    # A short path: AF_UNIX addresses are limited to 108 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="edged-") as tmp:
        path = os.path.join(tmp, "notify")
        ns = NotifySocket(path)
        yield path, ns
        ns.sock.close()



def start_daemon(spawned: list[DaemonProcess], tmp_path: Path, stream: str, url: str,
                 *extra: str, **env: str) -> tuple[DaemonProcess, str]:
    consumer = f"host-{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "edged.toml", [{
        "stream": stream, "group": GROUP, "handler": "tests.handlers:record", "start-id": "0",
    }], daemon={"consumer": consumer})
    d = DaemonProcess(cfg, url, tmp_path / "d.log", *extra,
                      env=edged_env(EDGED_TEST_REDIS=url, EDGED_TEST_CONSUMER=consumer, **env))
    spawned.append(d)
    return d, consumer


def stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def test_notify_ready_status_watchdog_and_stopping(
    tmp_path: Path, stream: str, spawned: list[DaemonProcess],
    notify_socket: tuple[str, NotifySocket],
) -> None:
    """Started under NOTIFY_SOCKET, WATCHDOG_USEC=500000 and JOURNAL_STREAM, with Redis not
    up yet. While it waits for Redis: STATUS= says so and WATCHDOG=1 pings arrive, but no
    READY=1. Once a server comes up: READY=1 arrives, and by then the consumer has read from
    the group (XINFO CONSUMERS lists it); pings keep coming. SIGSTOPped, nothing arrives;
    SIGCONTed, pings resume. SIGTERM: STOPPING=1, exit 0. Log lines carry no timestamp."""
    path, ns = notify_socket
    srv = Server(port=free_port(), data_dir=tmp_path / "srv")
    d, consumer = start_daemon(spawned, tmp_path, stream, srv.url, NOTIFY_SOCKET=path,
                               WATCHDOG_USEC="500000", JOURNAL_STREAM="8:12345")
    try:
        wait_for(lambda: ns.lines().count("WATCHDOG=1") >= 2
                 and any(x.startswith("STATUS=waiting for Redis") for x in ns.lines()),
                 what=f"pings and STATUS while Redis is away: {ns.lines()}\n{d.output()}")
        assert "READY=1" not in ns.lines()

        srv.start()
        wait_for(lambda: "READY=1" in ns.lines(), timeout=20, what=f"READY=1\n{d.output()}")
        with srv.client() as r:
            names = [c["name"].decode() for c in r.xinfo_consumers(stream, GROUP)]
        assert names == [consumer]
        ready_at = ns.lines().index("READY=1")
        assert ns.lines()[ready_at + 1] == "STATUS=reading 1 stream; 0 processed, 0 failed, 0 in flight"
        wait_for(lambda: ns.lines()[ready_at:].count("WATCHDOG=1") >= 4, what="pings after READY")

        d.signal(signal.SIGSTOP)
        wait_for(lambda: stopped(d.pid), what="process stopped")
        assert ns.nothing_for(1.2) == [], "a stopped daemon cannot be alive"
        d.signal(signal.SIGCONT)
        count = ns.lines().count("WATCHDOG=1")
        wait_for(lambda: ns.lines().count("WATCHDOG=1") > count, what="pings after SIGCONT")

        d.signal(signal.SIGTERM)
        wait_for(lambda: "STOPPING=1" in ns.lines(), what="STOPPING=1")
        assert d.wait_exit(20) == 0, d.output()
    finally:
        srv.stop()
    out = d.output().splitlines()
    assert any("ready: consumer" in line for line in out)
    for line in out:
        assert re.match(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) edged\.[a-z_.]+: ", line), line


def test_json_log_lines(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """`--log-format json`: a daemon that starts, handles an entry and drains writes only lines
    that are JSON objects with ts, level, logger and msg, among them the ready and stopped
    lines."""
    d, _ = start_daemon(spawned, tmp_path, stream, server.url, "--log-format", "json")
    d.wait_ready()
    r.xadd(stream, {"payload": json.dumps({"n": 1})})
    wait_for(lambda: r.llen(f"{stream}:handled") == 1, what="entry handled")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.output()
    docs = [json.loads(line) for line in d.output().splitlines()]
    for doc in docs:
        assert {"ts", "level", "logger", "msg"} <= doc.keys(), doc
        assert doc["level"] in ("debug", "info", "warning", "error", "critical")
    msgs = [doc["msg"] for doc in docs]
    assert any(m.startswith("ready: consumer") for m in msgs), msgs
    assert any(m.startswith("stopped: 1 handled (1 acked") for m in msgs), msgs


def test_notify_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """notify() sends one datagram with the lines joined by newlines to an abstract-namespace
    socket written as "@name", and is a no-op returning False when NOTIFY_SOCKET is unset."""
    name = f"edged-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1", "STATUS=hello")
        assert sock.recv(4096) == b"READY=1\nSTATUS=hello"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False
