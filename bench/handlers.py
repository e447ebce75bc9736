"""Handlers edged runs during the benchmark (``handler = "bench.handlers:noop"``)."""

from typing import Any


async def noop(event: Any) -> None:
    """Do nothing, so the benchmark measures the daemon's own per-entry cost."""
    return None
