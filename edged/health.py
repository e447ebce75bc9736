"""The daemon's HTTP endpoints: /metrics, /healthz, /readyz, on `[daemon] listen`.

A tiny anyio TCP server, no web framework: GET only, one request per connection, answered
HTTP/1.0-style with a Content-Length and closed. It is bound before the daemon touches Redis,
so /readyz answers (503) while Redis is still unreachable, and a port that cannot be bound
stops the daemon before it consumes anything.

- /healthz (liveness): 200 while the event loop answers and no reader is stuck: a reader that
  is connected and has a free worker slot but has not completed a read for
  ``3 x read-block + 10s``. A reader waiting for Redis (backing off) or for busy workers is not
  stuck, so Redis being away never gets the daemon restarted (it reconnects by itself).
- /readyz (readiness): 200 while every stream is being read (first read done, connected) and
  the daemon is not draining; 503 with the reasons otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from prometheus_client import CONTENT_TYPE_LATEST

from edged.config import split_host_port
from edged.metrics import GroupSampler, make_registry, render

if TYPE_CHECKING:
    from edged.daemon import Daemon

log = logging.getLogger("edged.health")

READ_TIMEOUT = 5.0  # a client gets this long to send its request line and headers
MAX_REQUEST = 8192
TEXT = "text/plain; charset=utf-8"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           503: "Service Unavailable"}


class ListenError(Exception):
    """The HTTP address cannot be bound; the message names it."""


def stall_limit(daemon: Daemon) -> float:
    """Seconds without a completed read after which a connected, idle-slotted reader is stuck."""
    return 3 * daemon.config.daemon.read_block.seconds + 10


def liveness_problems(daemon: Daemon, stopping: bool) -> list[str]:
    """Why the daemon looks wedged; empty when it is alive. Shared with the systemd watchdog."""
    if stopping:
        return []  # readers stop reading on purpose while the drain runs
    limit = stall_limit(daemon)
    now = time.monotonic()
    problems = []
    for s in daemon.streams:
        quiet = now - s.last_progress
        # Redis away: the reader backs off and retries (socket timeouts bound each try).
        # Every slot busy: the reader waits for a handler to finish, by design.
        if quiet > limit and s.connected and s.stats.in_flight < s.cfg.concurrency:
            problems.append(f"stream {s.stream} ({s.group}): no read completed for {quiet:.0f}s")
    return problems


def readiness_problems(daemon: Daemon, stopping: bool) -> list[str]:
    """Why the daemon is not ready; empty when every stream is being read."""
    problems = ["draining"] if stopping else []
    for s in daemon.streams:
        if not s.connected:
            problems.append(f"stream {s.stream} ({s.group}): Redis unavailable")
        elif not s.ready.is_set():
            problems.append(f"stream {s.stream} ({s.group}): not reading yet")
    return problems


class HealthServer:
    """Serves the endpoints of one daemon; ``bind`` first, then ``serve`` in a task group."""

    def __init__(self, daemon: Daemon, listen: str, stopping: Callable[[], bool]) -> None:
        self.daemon = daemon
        self.listen = listen
        self.host, self.port = split_host_port(listen)
        self.sampler = GroupSampler(daemon)  # the caller runs sampler.run once Redis is ours
        self._stopping = stopping
        self._registry = make_registry(daemon, self.sampler)
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

    @classmethod
    def configured(cls, daemon: Daemon, stopping: Callable[[], bool]) -> HealthServer | None:
        """The server for ``[daemon] listen``; None when it is empty (HTTP off)."""
        listen = daemon.config.daemon.listen
        return cls(daemon, listen, stopping) if listen else None

    async def bind(self) -> None:
        """Listen on the configured address; raises ListenError naming it."""
        try:
            self._listener = await anyio.create_tcp_listener(
                local_host=self.host, local_port=self.port
            )
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {self.listen} ([daemon] listen, for /metrics /healthz "
                f"/readyz): {exc.strerror or exc}"
            ) from None
        log.info("serving /metrics /healthz /readyz on http://%s/", self.listen)

    async def serve(self) -> None:
        assert self._listener is not None, "bind() first"
        async with self._listener:
            await self._listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(READ_TIMEOUT):
                    head = await _read_head(stream)
                status, ctype, body = self.respond(head)
                reply = (f"HTTP/1.0 {status} {REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n")
                if status == 405:
                    reply += "Allow: GET\r\n"
                await stream.send(reply.encode() + b"\r\n" + body)
            except (TimeoutError, OSError, anyio.EndOfStream, anyio.BrokenResourceError,
                    anyio.ClosedResourceError):
                return  # the client went away or never finished its request
            except Exception:
                # Never let one request end the serving task group (and with it the daemon).
                log.exception("HTTP request failed")

    def respond(self, head: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request head."""
        parts = head.split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, TEXT, b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target not in (b"/metrics", b"/healthz", b"/readyz"):
            return 404, TEXT, b"not found: try /metrics /healthz /readyz\n"
        if method != b"GET":
            return 405, TEXT, b"GET only\n"
        if target == b"/metrics":
            return 200, CONTENT_TYPE_LATEST, render(self._registry)
        stopping = self._stopping()
        if target == b"/healthz":
            problems = liveness_problems(self.daemon, stopping)
        else:
            problems = readiness_problems(self.daemon, stopping)
        if problems:
            return 503, TEXT, ("; ".join(problems) + "\n").encode()
        return 200, TEXT, b"ok\n"


async def _read_head(stream: anyio.abc.SocketStream) -> bytes:
    """The request line and headers (a body, never expected for GET, is ignored)."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_REQUEST:
            break
        data += await stream.receive(4096)
    return data
