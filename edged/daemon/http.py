"""The daemon's HTTP endpoints: /metrics, /healthz, /readyz on `[daemon] listen`, and
``POST /v1/publish/<stream>`` into the outbox there and on the outbox's unix socket.

A tiny anyio server, no web framework: one request per connection, answered HTTP/1.0-style
with a Content-Length and closed. It is bound before the daemon touches Redis, so /readyz
answers (503) and publishes are accepted while Redis is still unreachable, and an address that
cannot be bound stops the daemon before it consumes anything.

- /healthz (liveness): 200 while the event loop answers and the daemon is alive;
- /readyz (readiness): 200 while the daemon is ready; 503 with the reasons otherwise.

What alive and ready mean is decided in status.py, for every observer alike.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from edged.config import split_host_port
from edged.daemon.metrics import render
from edged.daemon.status import DaemonStatus

log = logging.getLogger("edged.http")

READ_TIMEOUT = 5.0  # a client gets this long to send its request line and headers
BODY_TIMEOUT = 60.0  # and this long to send a publish body
MAX_REQUEST = 8192
MAX_BODY = 16 * 2**20  # one publish request; a producer with more sends several
TEXT = "text/plain; charset=utf-8"
REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 503: "Service Unavailable",
           507: "Insufficient Storage"}
PUBLISH_PREFIX = b"/v1/publish/"

Reply = tuple[int, str, bytes]
Publisher = Callable[[bytes, bytes, bytes], Awaitable[Reply]]
"""(path, query, body) of a publish request → the reply (edged.outbox.route)."""


@dataclass(frozen=True)
class PublishSocket:
    """The outbox's unix socket: publishes (and the GET endpoints) over a file whose
    permissions say who may publish."""

    path: str
    mode: int


class ListenError(Exception):
    """The HTTP address cannot be bound; the message names it."""


ACCEPT_RETRY = 1.0


class HealthServer:
    """Serves the endpoints of one daemon; ``bind`` first, then ``serve`` in a task group."""

    def __init__(self, listen: str, status: Callable[[], DaemonStatus],
                 registry: CollectorRegistry, *, publisher: Publisher | None = None,
                 publish_on_listen: bool = True, publish_socket: PublishSocket | None = None
                 ) -> None:
        """``listen`` "" serves no TCP; ``publisher`` None (no [outbox]) takes no publishes."""
        self.listen = listen
        self._status = status
        self._registry = registry
        self._publisher = publisher
        self._publish_on_listen = publish_on_listen
        self._socket = publish_socket
        # (listener, whether it takes publishes)
        self._listeners: list[tuple[anyio.abc.Listener[Any], bool]] = []

    async def bind(self) -> None:
        """Listen on the configured address and socket; raises ListenError naming them."""
        if self.listen:
            host, port = split_host_port(self.listen)
            try:
                tcp = await anyio.create_tcp_listener(local_host=host, local_port=port)
            except OSError as exc:
                raise ListenError(
                    f"cannot listen on {self.listen} ([daemon] listen, for /metrics /healthz "
                    f"/readyz): {exc.strerror or exc}"
                ) from None
            publishes = self._publisher is not None and self._publish_on_listen
            self._listeners.append((tcp, publishes))
            log.info("serving /metrics /healthz /readyz%s on http://%s/",
                     " and POST /v1/publish/<stream>" if publishes else "", self.listen)
        if self._socket is not None and self._publisher is not None:
            self._listeners.append((await _bind_unix(self._socket), True))
            log.info("taking publishes on unix socket %s (mode %o)", self._socket.path,
                     self._socket.mode)

    async def serve(self) -> None:
        assert self._listeners or not (self.listen or self._socket), "bind() first"
        try:
            async with anyio.create_task_group() as requests:
                for listener, publishes in self._listeners:
                    # A MultiListener (one socket per address family) has no accept(): one
                    # loop each.
                    for one in getattr(listener, "listeners", [listener]):
                        requests.start_soon(self._accept_loop, one, publishes, requests)
        finally:
            with anyio.CancelScope(shield=True):
                for listener, _ in self._listeners:
                    await listener.aclose()
                if self._socket is not None:
                    _unlink_socket(self._socket.path)

    async def _accept_loop(self, listener: Any, publishes: bool,
                           requests: anyio.abc.TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # EMFILE under a flood of clients: HTTP waits, edged goes on
                log.warning("HTTP: cannot accept a connection (%s); trying again in %.0fs",
                            exc, ACCEPT_RETRY)
                await anyio.sleep(ACCEPT_RETRY)
                continue
            requests.start_soon(self._handle, stream, publishes)

    async def _handle(self, stream: anyio.abc.ByteStream, publishes: bool = False) -> None:
        async with stream:
            try:
                with anyio.fail_after(READ_TIMEOUT):
                    head, rest = await _read_head(stream)
                if head is None:
                    status, ctype, body = 431, TEXT, b"request line and headers too long\n"
                elif publishes and _is_publish(head):
                    status, ctype, body = await self._publish(stream, head, rest)
                else:
                    status, ctype, body = self.respond(head)
                reply = (f"HTTP/1.0 {status} {REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n")
                if status == 405:
                    reply += f"Allow: {'POST' if head and _is_publish_path(head) else 'GET'}\r\n"
                await stream.send(reply.encode() + b"\r\n" + body)
            except (TimeoutError, OSError, anyio.EndOfStream, anyio.BrokenResourceError,
                    anyio.ClosedResourceError):
                return  # the client went away or never finished its request
            except Exception:
                # Never let one request end the serving task group (and with it the daemon).
                log.exception("HTTP request failed")

    async def _publish(self, stream: anyio.abc.ByteStream, head: bytes, rest: bytes) -> Reply:
        """Read the body of a publish request and hand it to the outbox."""
        assert self._publisher is not None
        if _header(head, b"origin") is not None:
            # Browsers send Origin with every cross-site POST: a web page open on this host
            # must not publish through the daemon. Producers (curl, edged, libraries) send none.
            return 403, TEXT, b"publishing from a web page is refused (Origin header)\n"
        length = _content_length(head)
        if length is None:
            return 411, TEXT, b"send the body with a Content-Length (no chunked encoding)\n"
        if length > MAX_BODY:
            return 413, TEXT, (f"a publish body holds at most {MAX_BODY} bytes; send the "
                               "entries in several requests\n").encode()
        with anyio.fail_after(BODY_TIMEOUT):
            body = bytearray(rest)  # grows in place: bytes += would copy it every chunk
            while len(body) < length:
                body += await stream.receive(min(65536, length - len(body)))
        target = head.split(b"\n", 1)[0].split()[1]
        path, _, query = target.partition(b"?")
        return await self._publisher(path, query, bytes(body[:length]))

    def respond(self, head: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request head."""
        parts = head.split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, TEXT, b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target.startswith(PUBLISH_PREFIX):
            if method != b"POST":
                return 405, TEXT, b"POST NDJSON to publish\n"
            return 404, TEXT, (b"publishing is not on here: it needs [outbox] in the daemon's "
                               b"config (and outbox http = true for this address)\n")
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


async def _read_head(stream: anyio.abc.ByteStream) -> tuple[bytes | None, bytes]:
    """The request line and headers, and what of the body came with them; (None, b"") when
    they pass MAX_REQUEST without ending."""
    data = b""
    while True:
        ends = [(at, len(end)) for end in (b"\r\n\r\n", b"\n\n")
                if (at := data.find(end)) >= 0]
        if ends:  # the earliest end: the body may hold the other one
            at, size = min(ends)
            if at > MAX_REQUEST:
                return None, b""
            return data[:at + size], data[at + size:]
        if len(data) > MAX_REQUEST:
            return None, b""
        data += await stream.receive(4096)


def _is_publish_path(head: bytes) -> bool:
    parts = head.split(b"\n", 1)[0].split()
    return len(parts) == 3 and parts[1].startswith(PUBLISH_PREFIX)


def _is_publish(head: bytes) -> bool:
    return _is_publish_path(head) and head.startswith(b"POST ")


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


def _content_length(head: bytes) -> int | None:
    """The Content-Length header; None without one, or with chunked encoding."""
    length = None
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None
        if sep and name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
    return length if length is None or length >= 0 else None


async def _bind_unix(sock: PublishSocket) -> anyio.abc.Listener[Any]:
    """Listen on the socket file; a stale one (no daemon behind it) is replaced, anything
    else at the path is left alone and stops the daemon."""
    where = f"cannot listen on {sock.path} ([outbox] socket)"
    try:
        existing = os.lstat(sock.path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if not stat.S_ISSOCK(existing.st_mode):
            raise ListenError(f"{where}: the path exists and is not a socket")
        if _socket_answers(sock.path):
            raise ListenError(f"{where}: another process listens on it")
        _unlink_socket(sock.path)
    try:
        os.makedirs(os.path.dirname(sock.path) or ".", exist_ok=True)
        listener = await anyio.create_unix_listener(sock.path, mode=sock.mode)
        os.chmod(sock.path, sock.mode)  # the umask (0077 under systemd) must not narrow it
    except OSError as exc:
        raise ListenError(f"{where}: {exc.strerror or exc}") from None
    return listener


def _socket_answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _unlink_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass
