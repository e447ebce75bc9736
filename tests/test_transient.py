"""Failover replies are transient for edged's clients, and only for them.

edged makes UNBLOCKED (and NOREPLICAS, MASTERDOWN) connection errors through its own parser
class; a client the handler code makes in the same process keeps redis-py's behaviour.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

import edged.daemon.run  # noqa: F401 - everything the daemon imports is loaded
from edged.connect.transient import TRANSIENT_ERRORS, FailoverError
from tests.servers import Server
from tests.support import edged_client, until


async def _unblocked_error(client: Any, name: str, admin: Any, stream: str) -> BaseException:
    """The error ``client`` (connection name ``name``) gets when its blocking XREAD is ended by
    CLIENT UNBLOCK ... ERROR."""
    caught: list[BaseException] = []

    async def blocked_read() -> None:
        try:
            await client.xread({stream: "$"}, block=0)
        except Exception as exc:
            caught.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(blocked_read)

        async def unblocked() -> bool:
            for info in await admin.client_list():
                if info.get("name") == name and info.get("cmd") == "xread":
                    return bool(await admin.client_unblock(int(info["id"]), error=True))
            return False

        await until(unblocked, what="the read to block, then be unblocked")
    assert caught, "the blocked read returned without an error"
    return caught[0]


@pytest.mark.anyio
async def test_unblocked_is_a_failover_error_for_edged_clients_only(server: Server,
                                                                     stream: str) -> None:
    admin = redis.asyncio.Redis(port=server.port)
    mine = edged_client(server.url, socket_timeout=30, client_name="edged-test")
    theirs = redis.asyncio.Redis(port=server.port, client_name="handler-test")
    try:
        ours = await _unblocked_error(mine, "edged-test", admin, stream)
        assert isinstance(ours, FailoverError) and isinstance(ours, TRANSIENT_ERRORS), repr(ours)
        plain = await _unblocked_error(theirs, "handler-test", admin, stream)
        assert isinstance(plain, ResponseError) and not isinstance(plain, RedisConnectionError), (
            f"importing edged changed redis-py for other clients: {plain!r}"
        )
    finally:
        for c in (admin, mine, theirs):
            await c.aclose()
