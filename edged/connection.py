"""Connections to Redis: URL schemes, TLS, ACL user and password file, and reconnect backoff."""

from __future__ import annotations

import inspect
import os
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from edged.config import DEFAULT_REDIS_URL, RedisConfig, TLSConfig, redact_url
from edged.errors import ConfigError


class FailoverError(RedisConnectionError):
    """Redis answered that it is in the middle of a failover (UNBLOCKED, NOREPLICAS, MASTERDOWN).

    redis-py returns these as plain ResponseErrors; registering them as connection errors makes
    redis-py drop the connection and every loop of edged treat them as "reconnect and go on".
    """


for _code in ("UNBLOCKED", "NOREPLICAS", "MASTERDOWN"):
    BaseParser.EXCEPTION_CLASSES.setdefault(_code, FailoverError)

# Errors after which the right move is "wait, reconnect, go on". READONLY: we are talking to a
# replica (the old primary after a failover); the next connection finds the new primary.
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)

# Under systemd, LoadCredential=redis:/path puts the secret in $CREDENTIALS_DIRECTORY/redis.
CREDENTIAL_NAME = "redis"


def read_secret(path: str | None) -> str | None:
    """The password from ``path`` (first line), else from systemd's credential directory."""
    if path is None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds or not (Path(creds) / CREDENTIAL_NAME).is_file():
            return None
        path = str(Path(creds) / CREDENTIAL_NAME)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"password-file {path}: cannot read: {exc.strerror}") from None
    secret = text.splitlines()[0] if text else ""
    if not secret:
        raise ConfigError(f"password-file {path}: is empty")
    return secret


def tls_kwargs(tls: TLSConfig | None) -> dict[str, Any]:
    if tls is None:
        return {}
    kwargs: dict[str, Any] = {"ssl_cert_reqs": "required" if tls.verify else "none"}
    kwargs["ssl_check_hostname"] = tls.verify
    if tls.ca_file:
        kwargs["ssl_ca_certs"] = tls.ca_file
    if tls.cert_file:
        kwargs["ssl_certfile"] = tls.cert_file
        kwargs["ssl_keyfile"] = tls.key_file
    return kwargs


def make_client(
    cfg: RedisConfig,
    *,
    url: str | None = None,
    socket_timeout: float = 10.0,
    client_name: str | None = None,
) -> Redis:
    """A client for the configured Redis (``url`` overrides the config's).

    redis-py's own retries are off: callers own retrying, with backoff, where a retry is safe
    (a retried XADD could publish twice; a retried blocking read hides the stop flag).
    """
    if cfg.sentinel is not None and url is None:
        from edged.sentinel import make_sentinel_client

        return make_sentinel_client(cfg, _primary_kwargs(cfg, socket_timeout, client_name))
    target = url or cfg.url or DEFAULT_REDIS_URL
    scheme = urlsplit(target).scheme
    tls = cfg.tls
    if tls is not None and scheme == "redis":
        target = "rediss" + target[len("redis") :]
        scheme = "rediss"
    kwargs = _primary_kwargs(cfg, socket_timeout, client_name)
    if scheme == "rediss":
        kwargs.update(tls_kwargs(tls or TLSConfig()))
    return Redis.from_url(target, **kwargs)


# No CLIENT SETINFO on connect: Redis 7.0 lacks it, and a least-privilege ACL user would fill
# ACL LOG with its denials on 7.2+. redis-py 8 spells this driver_info=None; older, lib_name.
NO_CLIENT_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def _primary_kwargs(cfg: RedisConfig, socket_timeout: float, client_name: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": cfg.connect_timeout.seconds,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
        # RESP2 on every redis-py version: the raw stream replies we parse have one shape.
        "protocol": 2,
        "db": cfg.db,  # a db in the URL wins
        **NO_CLIENT_SETINFO,
    }
    password = read_secret(cfg.password_file)
    if password is not None:
        kwargs["password"] = password
    if cfg.username is not None:
        kwargs["username"] = cfg.username
    return kwargs


def describe_target(cfg: RedisConfig, url: str | None = None) -> str:
    """Where we connect, for logs: never with a password."""
    if cfg.sentinel is not None and url is None:
        return f"sentinel service {cfg.sentinel.service} via {','.join(cfg.sentinel.hosts)}"
    return redact_url(url or cfg.url or DEFAULT_REDIS_URL)


class Backoff:
    """Capped exponential backoff with full jitter, reset after a success."""

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0
