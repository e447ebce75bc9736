"""Redis behind Sentinel: find the primary, follow failovers at once, check the role.

redis-py's SentinelConnectionPool asks the sentinels for the primary whenever it opens a
connection, but it does not follow `+switch-master`: connections to the old primary live on
until they fail, and a paused old primary can keep answering for seconds. So edged also
subscribes to `+switch-master` on every sentinel (each subscription PINGed, so a hung sentinel
is noticed) and drops every connection the moment a failover is announced, and checks ROLE now
and then: a connection that lands on a replica is dropped too. Lookups of the primary ask all
sentinels at once, each bounded (sentinel_lookup.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from edged.backoff import Backoff
from edged.config import RedisConfig, SentinelConfig, split_host_port
from edged.connect.auth import (
    NO_CLIENT_SETINFO,
    SENTINEL_CREDENTIAL_NAME,
    read_secret,
    tls_kwargs,
)
from edged.connect.causes import cause
from edged.connect.sentinel_lookup import LOOKUP_TIMEOUT, BoundedSentinel
from edged.connect.transient import TRANSIENT_ERRORS

log = logging.getLogger("edged.sentinel")

SWITCH_CHANNEL = "+switch-master"
# A subscription is PINGed when it has been quiet this long, and given up when its sentinel has
# said nothing (not even PONG) for SILENT_AFTER: a hung sentinel must not hide a failover.
PING_EVERY = 1.0
SILENT_AFTER = 3.0


def sentinel_kwargs(cfg: SentinelConfig, socket_timeout: float) -> dict[str, Any]:
    """How to talk to the sentinels themselves (their own user, password, TLS)."""
    # No retries underneath: redis-py's default (several tries of each timeout) made one hung
    # sentinel cost 25 s per lookup. Lookups are bounded (sentinel_lookup.py); callers retry.
    kwargs: dict[str, Any] = {"socket_timeout": socket_timeout,
                              "socket_connect_timeout": min(socket_timeout, 2.0),
                              "retry": Retry(NoBackoff(), 0), "protocol": 2,
                              **NO_CLIENT_SETINFO}
    password = read_secret(cfg.password_file, SENTINEL_CREDENTIAL_NAME)
    if password is not None:
        kwargs["password"] = password
    if cfg.username is not None:
        kwargs["username"] = cfg.username
    if cfg.tls is not None:
        kwargs["ssl"] = True
        kwargs.update(tls_kwargs(cfg.tls, "[redis.sentinel.tls]"))
    return kwargs


def make_sentinel_client(cfg: RedisConfig, primary_kwargs: dict[str, Any]) -> Redis:
    """A client whose connections always go to the current primary of the service."""
    assert cfg.sentinel is not None
    hosts = [split_host_port(h) for h in cfg.sentinel.hosts]
    sentinel = BoundedSentinel(hosts, sentinel_kwargs=sentinel_kwargs(cfg.sentinel, LOOKUP_TIMEOUT))
    kwargs = dict(primary_kwargs)
    if cfg.tls is not None:
        kwargs["ssl"] = True
        kwargs.update(tls_kwargs(cfg.tls))
    return sentinel.master_for(cfg.sentinel.service, redis_class=Redis, **kwargs)


async def is_primary(client: Redis) -> bool:
    role = await client.execute_command("ROLE")
    first = role[0] if isinstance(role, list | tuple) and role else role
    return (first.decode() if isinstance(first, bytes) else str(first)) == "master"


class FailoverWatch:
    """Subscribes to the sentinels' `+switch-master` and checks the primary's role."""

    def __init__(self, cfg: SentinelConfig, client: Redis,
                 on_switch: Callable[[str], Awaitable[None]]) -> None:
        self.cfg = cfg
        self.client = client
        self.on_switch = on_switch
        self._kwargs = sentinel_kwargs(cfg, socket_timeout=30.0)
        self._announced_primary: str | None = None

    async def follow_announcements(self) -> None:
        """Listen to every sentinel at once; never returns.

        One subscription would stay on a sentinel that hangs (a paused process never closes
        the connection) and hear nothing; each subscription is instead PINGed, dropped when
        its sentinel goes silent, and made again. The same failover is announced by every
        sentinel: it is acted on once per new primary.
        """
        async with anyio.create_task_group() as tg:
            for host in self.cfg.hosts:
                tg.start_soon(self._follow, host)

    async def _follow(self, address: str) -> None:
        host, port = split_host_port(address)
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            sentinel = Redis(host=host, port=port, **self._kwargs)
            try:
                async with sentinel.pubsub() as pubsub:
                    await pubsub.subscribe(SWITCH_CHANNEL)
                    await self._listen(pubsub, backoff)
            except TRANSIENT_ERRORS as exc:
                delay = backoff.next_delay()
                log.warning("sentinel %s unreachable for +switch-master (%s); again in %.1fs",
                            address, cause(exc), delay)
                await anyio.sleep(delay)
            finally:
                with anyio.CancelScope(shield=True):
                    await sentinel.aclose()

    async def _listen(self, pubsub: PubSub, backoff: Backoff) -> None:
        """Hand on announcements; raise TimeoutError once the sentinel stops answering PINGs."""
        heard = anyio.current_time()
        while True:
            message = await pubsub.get_message(timeout=PING_EVERY)
            now = anyio.current_time()
            if message is None:
                if now - heard > SILENT_AFTER:
                    raise RedisTimeoutError(f"no answer to PING for {SILENT_AFTER:.0f}s")
                await pubsub.ping()
                continue
            heard = now
            backoff.reset()
            if message.get("type") == "message":
                await self._announced(message["data"])

    async def _announced(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        parts = text.split()
        if len(parts) != 5 or parts[0] != self.cfg.service:
            return
        primary = f"{parts[3]}:{parts[4]}"
        if primary == self._announced_primary:
            return  # the same failover, told by another sentinel
        self._announced_primary = primary
        await self.on_switch(primary)

    async def check_role(self, interval: float = 2.0) -> None:
        """Drop our connections if the server we talk to is not the primary any more."""
        while True:
            await anyio.sleep(interval)
            try:
                if not await is_primary(self.client):
                    log.warning("connected to a replica, not the primary: reconnecting")
                    await self.client.connection_pool.disconnect()
            except TRANSIENT_ERRORS:
                continue
