"""Background loops that outlive their own errors: none of them may end the daemon.

The daemon exits only for a signal, a config error, or losing its consumer name. Every loop
beside the consumers (heartbeat, clean-up, sampler, failover watch) handles the Redis errors it
expects at each tick; ``keep_running`` is the net under them: whatever still escapes is logged
with its traceback and the loop starts again after a capped backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from edged.backoff import Backoff

log = logging.getLogger("edged.daemon")

# A loop that ran this long before failing is not crash-looping: its backoff starts over.
HEALTHY_RUN = 60.0


async def keep_running(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run ``loop`` until it returns; restart it after any error it lets escape."""
    backoff = Backoff(base=0.5, cap=30.0)
    while True:
        started = anyio.current_time()
        try:
            await loop()
            return
        except Exception:
            if anyio.current_time() - started > HEALTHY_RUN:
                backoff.reset()
            delay = backoff.next_delay()
            log.exception("%s failed; starting it again in %.1fs", name, delay)
        await anyio.sleep(delay)
