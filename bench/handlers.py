"""Handlers edged runs during the benchmark (``handler = "bench.handlers:noop"``)."""

from typing import Any


async def noop(event: Any) -> None:
    """Do nothing, so the benchmark measures the daemon's own per-entry cost."""
    return None


async def slow(event: Any) -> None:
    """Hold each entry a while, so a killed daemon leaves entries in flight (bench.takeover)."""
    import anyio

    await anyio.sleep(0.5)
