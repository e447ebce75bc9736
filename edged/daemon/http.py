"""The daemon's HTTP endpoints: /metrics, /healthz, /readyz, on `[daemon] listen`.

A tiny anyio TCP server, no web framework: GET only, one request per connection, answered
HTTP/1.0-style with a Content-Length and closed. It is bound before the daemon touches Redis,
so /readyz answers (503) while Redis is still unreachable, and a port that cannot be bound
stops the daemon before it consumes anything.

- /healthz (liveness): 200 while the event loop answers and the daemon is alive;
- /readyz (readiness): 200 while the daemon is ready; 503 with the reasons otherwise.

What alive and ready mean is decided in status.py, for every observer alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from edged.config import split_host_port
from edged.daemon.metrics import render
from edged.daemon.status import DaemonStatus

log = logging.getLogger("edged.http")

READ_TIMEOUT = 5.0  # a client gets this long to send its request line and headers
MAX_REQUEST = 8192
TEXT = "text/plain; charset=utf-8"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           503: "Service Unavailable"}


class ListenError(Exception):
    """The HTTP address cannot be bound; the message names it."""


ACCEPT_RETRY = 1.0


class HealthServer:
    """Serves the endpoints of one daemon; ``bind`` first, then ``serve`` in a task group."""

    def __init__(self, listen: str, status: Callable[[], DaemonStatus],
                 registry: CollectorRegistry) -> None:
        self.listen = listen
        self.host, self.port = split_host_port(listen)
        self._status = status
        self._registry = registry
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

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
        # A MultiListener (one socket per address family) has no accept(): one loop each.
        sockets = getattr(self._listener, "listeners", [self._listener])
        async with self._listener, anyio.create_task_group() as requests:
            for listener in sockets:
                requests.start_soon(self._accept_loop, listener, requests)

    async def _accept_loop(self, listener: Any, requests: anyio.abc.TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # EMFILE under a flood of clients: HTTP waits, edged goes on
                log.warning("HTTP: cannot accept a connection (%s); trying again in %.0fs",
                            exc, ACCEPT_RETRY)
                await anyio.sleep(ACCEPT_RETRY)
                continue
            requests.start_soon(self._handle, stream)

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
        status = self._status()
        problems = status.not_alive if target == b"/healthz" else status.not_ready
        if problems:
            return 503, TEXT, ("; ".join(problems) + "\n").encode()
        if status.degraded:  # alive, but say what fails: a restart would not fix it
            return 200, TEXT, ("ok; degraded: " + "; ".join(status.degraded) + "\n").encode()
        return 200, TEXT, b"ok\n"


async def _read_head(stream: anyio.abc.SocketStream) -> bytes:
    """The request line and headers (a body, never expected for GET, is ignored)."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_REQUEST:
            break
        data += await stream.receive(4096)
    return data
