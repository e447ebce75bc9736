"""The reader's own connection: its commands packed and written at once, replies read in order.

redis-py takes a connection from the pool for every command or pipeline (a lock, a probe of the
socket, observability hooks, the release) and builds a pipeline object around every batch; at
concurrency 16, where a round trip carries 16 entries, that was a third of the daemon's time
(py-spy, bench). The reader holds one connection for its life instead and talks to it directly.

The connection still belongs to the client's pool, so a failover that drops the pool's
connections (daemon/run.py, connect/sentinel.py) drops this one too: the next round trip then
fails, and the reader's backoff reconnects to whatever the pool now points at. A connection
whose state is unknown after an error or a cancellation is dropped, never reused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
from hiredis import pack_command
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class Wire:
    def __init__(self, client: Redis) -> None:
        self._pool = client.connection_pool
        self._conn: AbstractConnection | None = None

    async def call(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` in one write; their replies in order, an error reply as its
        exception (the others are still read, so the connection stays in step)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = await self._pool.get_connection()
        try:
            await self._send(conn, b"".join(map(pack_command, commands)))
            return await self._read_replies(conn, len(commands))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close()
            raise

    @staticmethod
    async def _send(conn: AbstractConnection, data: bytes) -> None:
        """Write ``data``. redis-py's send wraps every write in ``asyncio.wait_for``, a task per
        write; a write that fits the transport's buffer needs no waiting at all, so it goes
        straight to the stream writer (redis-py is pinned below 9 for such internals) and only
        a full buffer takes the timed path."""
        writer = getattr(conn, "_writer", None)
        if not conn.is_connected or writer is None or writer.transport.is_closing():
            await conn.send_packed_command(data, check_health=False)
            return
        writer.write(data)
        if writer.transport.get_write_buffer_size():  # not all of it went to the socket
            await conn.send_packed_command(b"", check_health=False)  # drains, with the timeout

    @staticmethod
    async def _read_replies(conn: AbstractConnection, count: int) -> list[Any]:
        """``count`` replies, under one timeout (the connection's socket timeout) for them all.

        Read from the connection's parser, not through ``read_response``, which opens a timeout
        context per reply and raises each error reply for us to catch again: 15% of the daemon's
        time at concurrency 16 (py-spy, bench). The parser hands error replies back as values
        and raises what means the connection is gone (closed, a failover reply: transient.py),
        as ``read_response`` would; the caller drops the connection after any exception.
        """
        parser: Any = conn._parser
        replies: list[Any] = []
        try:
            async with asyncio.timeout(conn.socket_timeout):
                for _ in range(count):
                    replies.append(await parser.read_response())
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout reading from {conn._host_error()}") from None
        except OSError as exc:
            raise RedisConnectionError(
                f"Error while reading from {conn._host_error()}: {exc}") from None
        return replies

    async def close(self) -> None:
        """Give the connection back to the pool, disconnected (it may hold unread replies)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)
            await self._pool.release(conn)
