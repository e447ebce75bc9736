"""Handlers edged runs during the benchmark (``handler = "bench.handlers:noop"``)."""

from __future__ import annotations

import atexit
import os
import time
from array import array
from typing import Any

LATENCY_FILE_ENV = "EDGED_BENCH_LATENCY_FILE"
"""Where ``latency`` writes what it recorded when the daemon exits (``bench.latency`` sets it)."""


async def noop(event: Any) -> None:
    """Do nothing, so the benchmark measures the daemon's own per-entry cost."""
    return None


def noop_sync(event: Any) -> None:
    """The same as a sync handler: edged runs it in a worker thread."""
    return None


async def slow(event: Any) -> None:
    """Hold each entry a while, so a killed daemon leaves entries in flight (bench.takeover)."""
    import anyio

    await anyio.sleep(0.5)


# Pairs (published ns, seen ns), flat: published at 2k, seen at 2k + 1. An array of int64 costs
# 16 bytes per entry and no allocation per append worth speaking of, so recording stays cheap.
_seen = array("q")


async def latency(event: Any) -> None:
    """Record when the entry was published (``payload["t"]``, time.time_ns) and when it got here.

    The pairs reach the harness through the file named by ``$EDGED_BENCH_LATENCY_FILE``, written
    at interpreter exit: edged returns normally from SIGTERM (drain, then exit 0), so ``atexit``
    runs. The harness filters out the warm-up by publish time.
    """
    now = time.time_ns()
    _seen.append(event.payload["t"])
    _seen.append(now)


def _write_latencies() -> None:
    path = os.environ.get(LATENCY_FILE_ENV)
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            _seen.tofile(f)
        # Renamed into place: the harness never reads a half-written file.
        os.replace(tmp, path)


if os.environ.get(LATENCY_FILE_ENV):
    atexit.register(_write_latencies)
