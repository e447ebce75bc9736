"""Shutdown is one budget: shutdown-grace for the handlers, then a bounded clean-up phase.
systemd must give the daemon all of it before it sends SIGKILL."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from edged.config import DaemonConfig
from edged.shutdown import CLEANUP_BUDGET, END_HEARTBEAT, HAND_BACK_AND_FLUSH, OUTBOX_SETTLE
from tests.servers import Server, free_port
from tests.support import Consuming, edged_client, make_consumer, until

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edged.service"


def test_unit_stop_timeout_covers_grace_and_cleanup() -> None:
    """TimeoutStopSec of the shipped unit ≥ the default shutdown-grace + the clean-up budget,
    and the unit's comment names the clean-up budget it was sized for."""
    text = UNIT.read_text()
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.M)
    assert stop, "TimeoutStopSec=<n>s not found in systemd/edged.service"
    grace = DaemonConfig().shutdown_grace.seconds
    assert int(stop.group(1)) >= grace + CLEANUP_BUDGET, (
        f"TimeoutStopSec={stop.group(1)}s is below shutdown-grace {grace:g}s + clean-up "
        f"{CLEANUP_BUDGET:g}s: systemd would SIGKILL a daemon still handing back work"
    )
    assert f"at most {CLEANUP_BUDGET:g}s" in text


def test_cleanup_budget_is_the_sum_of_its_phases() -> None:
    assert CLEANUP_BUDGET == HAND_BACK_AND_FLUSH + OUTBOX_SETTLE + END_HEARTBEAT


@pytest.mark.anyio
async def test_cleanup_is_bounded_when_redis_stops_answering(tmp_path: Path) -> None:
    """Five entries are handled and acked; a sixth is running when the server is paused
    (SIGSTOP: connections stay open, nothing answers) and the consumer is stopped with a 1s
    grace. The handler then finishes, but its ack cannot reach Redis (each try waits for the
    socket timeout, and the acker retries): the clean-up phase must still end within its
    budget, so run() returns.
    """
    server = Server(port=free_port(), data_dir=tmp_path).start()
    r = server.client()
    client = edged_client(server.url)
    handled: list[str] = []
    paused = anyio.Event()

    async def handler(event: Any) -> None:
        if event.payload == {"slow": True}:
            await paused.wait()
        handled.append(event.id)

    try:
        for _ in range(5):
            r.xadd("s", {"payload": b"{}"})
        consumer = make_consumer(client, "s", handler, concurrency=4)
        stopped_at = 0.0
        async with Consuming(consumer, grace=1.0):
            await until(lambda: len(handled) == 5, what="5 entries handled")
            await until(lambda: consumer.stats.acked == 5, what="5 entries acked")
            sixth = r.xadd("s", {"payload": b'{"slow": true}'}).decode()
            await until(lambda: consumer.stats.in_flight == 1, what="the sixth entry running")
            os.kill(server.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            paused.set()
        took = time.monotonic() - stopped_at
        os.kill(server.pid, signal.SIGCONT)
        assert handled[-1] == sixth
        # Generous: the point is "bounded", not how fast (without the budget: minutes).
        assert took < 1.0 + CLEANUP_BUDGET + 5, took
        # The ack's bytes may sit in the paused server's socket buffer and run after SIGCONT:
        # the sixth entry is then acked late, or else still pending here. Either way, not lost.
        rows = r.xpending_range("s", "edged", "-", "+", 10)
        assert [(row["message_id"].decode(), row["consumer"]) for row in rows] in (
            [], [(sixth, b"c1")]), rows
        assert consumer.stats.acked == 5
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGCONT)
        await client.aclose()
        r.close()
        server.stop()
