"""While Redis hangs, the outbox's retries send nothing: at most the batch in flight twice.

Guards the promise (README "Outbox"): a Redis that hangs (SIGSTOP, a network dropping
packets) gets at most the batch that was in flight when it stopped answering a second time,
never one more copy per retry. A retry must therefore not send the batch on a connection
that is already open: its XADDs would wait in the server's socket buffer and all run when it
wakes up. The forwarder probes the stream with XLEN first.

The daemon-level test (test_outbox_faults.py) retries through new connections, whose
handshake times out before any XADD is written, so it cannot tell a probe from none. Here the
forwarder runs in process on a client whose pool holds several open connections, as a busy
daemon's does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from edged.config import OutboxConfig
from edged.outbox.forward import Forwarder, OutboxStats
from edged.outbox.store import OutboxStore, Row
from tests.servers import Server, free_port
from tests.support import edged_client, until

pytestmark = pytest.mark.anyio

BATCH = 10
FAILED_ATTEMPTS = 3
OPEN_CONNECTIONS = FAILED_ATTEMPTS + 2


async def open_idle_connections(client: Any, n: int) -> None:
    pool = client.connection_pool
    connections = [await pool.get_connection() for _ in range(n)]
    for connection in connections:
        await pool.release(connection)


async def test_retries_while_redis_hangs_send_the_batch_at_most_twice(tmp_path: Path) -> None:
    """One batch of 10 waits in the outbox; the server is SIGSTOPped before the forwarder
    starts, with 5 open connections in the client's pool. After 3 failed attempts (socket
    timeout 0.5 s) the server is SIGCONTed. Must hold: the outbox drains, and the stream holds
    each entry at most twice (at most 20 entries), each of the 10 message ids at least once."""
    server = Server(port=free_port(), data_dir=tmp_path / "srv").start()
    r = server.client()
    client = edged_client(server.url, socket_timeout=0.5)
    store = OutboxStore(tmp_path / "outbox", max_entries=1000, max_bytes=2**20)
    stream = f"ob:{uuid.uuid4().hex[:8]}"
    msgids = [f"m{i:02d}" for i in range(BATCH)]
    stats = OutboxStats()
    try:
        store.open()
        store.append([Row(stream, m, 0, msgspec.msgpack.encode({"edged-msgid": m.encode()}))
                      for m in msgids])
        forwarder = Forwarder(store, OutboxConfig(batch=BATCH), anyio.CapacityLimiter(1), stats)
        await open_idle_connections(client, OPEN_CONNECTIONS)
        os.kill(server.pid, signal.SIGSTOP)
        async with anyio.create_task_group() as tg:
            tg.start_soon(forwarder.run, client)
            try:
                await until(lambda: stats.forward_errors >= FAILED_ATTEMPTS, timeout=60,
                            what=f"{FAILED_ATTEMPTS} failed forward attempts")
            finally:
                os.kill(server.pid, signal.SIGCONT)
            await until(lambda: store.depth.entries == 0, timeout=60, what="the outbox drained")
            tg.cancel_scope.cancel()
        rows = r.xrange(stream)
        sent = [fields[b"edged-msgid"].decode() for _, fields in rows]
        assert set(sent) == set(msgids), sent
        assert len(sent) <= 2 * BATCH, (
            f"{len(sent)} entries for a batch of {BATCH} after {stats.forward_errors} failed "
            "attempts: a retry sent the batch again while Redis hung")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGCONT)
        await client.aclose()
        store.close()
        r.close()
        server.stop()
