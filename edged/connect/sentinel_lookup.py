"""Asking the sentinels for the primary: all at once, each with a short timeout, no retries.

redis-py asks its sentinels one after another, each through a client with the library's
default retries, so one sentinel that accepts connections and never answers (a paused process,
a black-holed host) cost 25 s per lookup, and three of them 78 s. Here every sentinel is asked
at the same time; the first that names a healthy primary answers the lookup and the others are
cancelled, so a hung or dead sentinel costs nothing while another one answers, and a lookup
never takes longer than ``LOOKUP_TIMEOUT``. When none answers, the error is one line per
sentinel with its cause (connections.causes), not the clients' reprs.
"""

from __future__ import annotations

from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel

from edged.connect.causes import cause

# Per lookup, for every sentinel at once: sentinels answer SENTINEL MASTERS in microseconds on
# a working network, and a lookup is what a failover waits for.
LOOKUP_TIMEOUT = 2.0


def _address(sentinel: Redis) -> str:
    kwargs = sentinel.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


class BoundedSentinel(Sentinel):
    async def discover_master(self, service_name: str) -> Any:
        found: list[tuple[str, Any]] = []
        problems: dict[int, str] = {}

        async def ask(index: int, sentinel: Redis, scope: anyio.CancelScope) -> None:
            try:
                with anyio.fail_after(LOOKUP_TIMEOUT):
                    masters = await sentinel.sentinel_masters()
            except Exception as exc:  # every failure is reported, one line each
                problems[index] = cause(exc)
                return
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if state and self.check_master_state(state, service_name):
                found.append((state["ip"], state["port"]))
                scope.cancel()  # one answer is enough
            else:
                problems[index] = f"knows no healthy primary named {service_name!r}"

        async with anyio.create_task_group() as tg:
            for index, sentinel in enumerate(self.sentinels):
                tg.start_soon(ask, index, sentinel, tg.cancel_scope)
        if found:
            return found[0]
        said = "; ".join(f"{_address(s)} {problems.get(i, 'gave no answer')}"
                         for i, s in enumerate(self.sentinels))
        raise MasterNotFoundError(f"no sentinel named a primary for {service_name!r}: {said}")
