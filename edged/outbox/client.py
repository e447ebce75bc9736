"""``edged publish`` through the local daemon: POST the entries to its outbox.

The daemon is reached on the outbox's unix socket when the config names one (its permissions
say who may publish), else on ``[daemon] listen``. The producer needs no Redis password: only
the daemon talks to Redis.
"""

from __future__ import annotations

import http.client
import os
import socket
from urllib.parse import quote, urlencode

import msgspec

from edged.config import Config, split_host_port
from edged.errors import EXIT_TEMPFAIL, EXIT_UNAVAILABLE, EdgedError, UsageError

TIMEOUT = 60.0


class OutboxRefused(EdgedError):
    """The daemon's outbox is full or the daemon is stopping: nothing was accepted; try later."""

    exit_code = EXIT_TEMPFAIL


class DaemonUnavailable(EdgedError):
    """No daemon answers where the config says it takes publishes."""

    exit_code = EXIT_UNAVAILABLE


class Reply(msgspec.Struct):
    accepted: int
    ids: list[str]
    shards: list[str] | None = None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def endpoints(cfg: Config) -> list[str]:
    """Where the daemon takes publishes, in the order to try them: the socket
    (``unix:/run/edged/publish.sock``), then the listen address (``http://127.0.0.1:9478``);
    empty when the config has no [outbox]."""
    if cfg.outbox is None:
        return []
    found = [f"unix:{cfg.outbox.socket}"] if cfg.outbox.socket else []
    if cfg.outbox.http and cfg.daemon.listen:
        found.append(f"http://{cfg.daemon.listen}")
    return found


def reachable(cfg: Config) -> str | None:
    """The first of ``endpoints`` where a daemon answers (a user not allowed on the socket
    gets the listen address); None when none does."""
    return next((where for where in endpoints(cfg) if daemon_answers(where)), None)


def _connection(where: str, timeout: float) -> http.client.HTTPConnection:
    if where.startswith("unix:"):
        return _UnixConnection(where.removeprefix("unix:"), timeout)
    host, port = split_host_port(where.removeprefix("http://"))
    return http.client.HTTPConnection(host.strip("[]"), port, timeout=timeout)


def daemon_answers(where: str) -> bool:
    """A daemon listens there (a connection is accepted)."""
    if where.startswith("unix:") and not os.path.exists(where.removeprefix("unix:")):
        return False
    connection = _connection(where, 2.0)
    try:
        connection.connect()
    except OSError:
        return False
    finally:
        connection.close()
    return True


def publish_via_daemon(where: str, stream: str, bodies: list[bytes], fields: dict[str, bytes],
                       key: str | None) -> Reply:
    """POST the entries (JSON bodies) to the daemon at ``where``; its reply once they are on
    its disk. OutboxRefused (exit 75) when full or stopping; DaemonUnavailable (exit 69)."""
    query = [("field", f"{name}={value.decode()}") for name, value in fields.items()]
    if key is not None:
        query.append(("key", key))
    path = "/v1/publish/" + quote(stream, safe="") + ("?" + urlencode(query) if query else "")
    connection = _connection(where, TIMEOUT)
    try:
        try:
            connection.connect()
        except OSError as exc:
            raise DaemonUnavailable(f"no daemon takes publishes at {where} ({exc}); nothing "
                                    "was published") from None
        try:
            connection.request("POST", path, body=b"\n".join(bodies) + b"\n",
                               headers={"Content-Type": "application/x-ndjson"})
            response = connection.getresponse()
            status, data = response.status, response.read()
        except OSError as exc:  # sent, maybe taken: sending again could make copies
            raise EdgedError(f"the daemon at {where} did not answer ({exc}): the entries may "
                             "or may not have been accepted; check (edged_outbox_accepted_total, "
                             "the stream) before sending them again") from None
    finally:
        connection.close()
    if status == 202:
        return msgspec.json.decode(data, type=Reply)
    error = _error_text(data)
    if status in (503, 507):
        raise OutboxRefused(f"the daemon at {where} refused the entries: {error}")
    if status == 404:
        raise UsageError(f"the daemon at {where} takes no publishes: {error}")
    raise EdgedError(f"the daemon at {where} answered {status}: {error}")


def _error_text(data: bytes) -> str:
    try:
        return str(msgspec.json.decode(data)["error"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return data.decode("utf-8", "replace").strip()
