"""The Redis client of the daemon and of every CLI command: URL schemes, TLS, ACL user, password.

redis-py's own retries are off: callers own retrying, with backoff, where a retry is safe
(a retried XADD could publish twice; a retried blocking read hides the stop flag).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from edged.config import DEFAULT_REDIS_URL, RedisConfig, TLSConfig, check_redis_url, redact_url
from edged.connect.auth import NO_CLIENT_SETINFO, credential_kwargs, read_secret, tls_kwargs
from edged.connect.transient import FailoverAwareParser
from edged.errors import ConfigError


def make_client(
    cfg: RedisConfig,
    *,
    url: str | None = None,
    socket_timeout: float = 10.0,
    client_name: str | None = None,
) -> Redis:
    """A client for the configured Redis (``url`` overrides the config's)."""
    if cfg.sentinel is not None and url is None:
        from edged.connect.sentinel import make_sentinel_client

        return make_sentinel_client(cfg, _primary_kwargs(cfg, socket_timeout, client_name))
    if cfg.cluster is not None and url is None:
        from edged.connect.cluster import make_cluster_client

        return make_cluster_client(cfg, _primary_kwargs(cfg, socket_timeout, client_name))
    target = url or cfg.url or DEFAULT_REDIS_URL
    try:  # the config's url was checked when it was loaded; this is for --url and the like
        check_redis_url(target)
    except ValueError as exc:  # the message never holds the URL: it may hold a password
        raise ConfigError(f"the Redis URL given (--url or $EDGED_REDIS_URL): {exc}") from None
    scheme = urlsplit(target).scheme
    tls = cfg.tls
    if tls is not None and scheme == "redis":
        target = "rediss" + target[len("redis") :]
        scheme = "rediss"
    kwargs = _primary_kwargs(cfg, socket_timeout, client_name)
    parts = urlsplit(target)
    if (parts.username or parts.password) and kwargs.pop("credential_provider", None):
        # A user in the URL: redis-py takes it from there and refuses a credential provider
        # beside it; the password file is read once, and the URL's own password wins.
        password = read_secret(cfg.password_file)
        if password is not None and parts.password is None:
            kwargs["password"] = password
    if scheme == "rediss":
        kwargs.update(tls_kwargs(tls or TLSConfig()))
    return Redis.from_url(target, **kwargs)


def _primary_kwargs(cfg: RedisConfig, socket_timeout: float, client_name: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": cfg.connect_timeout.seconds,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
        # RESP2 on every redis-py version: the raw stream replies we parse have one shape.
        "protocol": 2,
        "db": cfg.db,  # a db in the URL wins
        "parser_class": FailoverAwareParser,
        **NO_CLIENT_SETINFO,
    }
    kwargs.update(credential_kwargs(cfg.username, cfg.password_file))
    return kwargs


def describe_user(cfg: RedisConfig, url: str | None = None) -> str:
    """The ACL user we log in as, for messages: the URL's, the config's, or ``default``."""
    target = url or (cfg.url if cfg.sentinel is None and cfg.cluster is None else None)
    if target:
        with contextlib.suppress(ValueError):
            name = urlsplit(target).username
            if name:
                return unquote(name)
    return cfg.username or "default"


def describe_target(cfg: RedisConfig, url: str | None = None) -> str:
    """Where we connect, for logs: never with a password."""
    if cfg.sentinel is not None and url is None:
        return f"sentinel service {cfg.sentinel.service} via {','.join(cfg.sentinel.hosts)}"
    if cfg.cluster is not None and url is None:
        return f"cluster via {','.join(cfg.cluster.nodes)}"
    return redact_url(url or cfg.url or DEFAULT_REDIS_URL)
