"""Redis behind Sentinel: find the primary, follow failovers at once, check the role.

redis-py's SentinelConnectionPool asks the sentinels for the primary whenever it opens a
connection, but it does not follow `+switch-master`: connections to the old primary live on
until they fail, and a paused old primary can keep answering for seconds. So edged also
subscribes to `+switch-master` and drops every connection the moment a failover is announced,
and checks ROLE now and then: a connection that lands on a replica is dropped too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from edged.backoff import Backoff
from edged.config import RedisConfig, SentinelConfig, split_host_port
from edged.connect.auth import (
    NO_CLIENT_SETINFO,
    SENTINEL_CREDENTIAL_NAME,
    read_secret,
    tls_kwargs,
)
from edged.connect.transient import TRANSIENT_ERRORS

log = logging.getLogger("edged.sentinel")

SWITCH_CHANNEL = "+switch-master"


def sentinel_kwargs(cfg: SentinelConfig, socket_timeout: float) -> dict[str, Any]:
    """How to talk to the sentinels themselves (their own user, password, TLS)."""
    kwargs: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": 2.0,
                              "protocol": 2, **NO_CLIENT_SETINFO}
    password = read_secret(cfg.password_file, SENTINEL_CREDENTIAL_NAME)
    if password is not None:
        kwargs["password"] = password
    if cfg.username is not None:
        kwargs["username"] = cfg.username
    if cfg.tls is not None:
        kwargs["ssl"] = True
        kwargs.update(tls_kwargs(cfg.tls))
    return kwargs


def make_sentinel_client(cfg: RedisConfig, primary_kwargs: dict[str, Any]) -> Redis:
    """A client whose connections always go to the current primary of the service."""
    assert cfg.sentinel is not None
    hosts = [split_host_port(h) for h in cfg.sentinel.hosts]
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs(cfg.sentinel, 2.0))
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

    async def follow_announcements(self) -> None:
        """Listen to one sentinel after another; never returns."""
        backoff = Backoff(base=0.2, cap=5.0)
        index = 0
        while True:
            host, port = split_host_port(self.cfg.hosts[index % len(self.cfg.hosts)])
            index += 1
            sentinel = Redis(host=host, port=port, **self._kwargs)
            try:
                async with sentinel.pubsub() as pubsub:
                    await pubsub.subscribe(SWITCH_CHANNEL)
                    backoff.reset()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message["data"]
                        text = data.decode() if isinstance(data, bytes) else str(data)
                        parts = text.split()
                        if len(parts) == 5 and parts[0] == self.cfg.service:
                            await self.on_switch(f"{parts[3]}:{parts[4]}")
            except TRANSIENT_ERRORS as exc:
                delay = backoff.next_delay()
                log.warning("sentinel %s:%d unreachable for +switch-master (%s); next one in "
                            "%.1fs", host, port, exc, delay)
                await anyio.sleep(delay)
            finally:
                await sentinel.aclose()

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
