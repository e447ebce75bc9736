"""Asking the sentinels for the primary: all at once, each with a short timeout, no retries.

redis-py asks its sentinels one after another, each through a client with the library's
default retries, so one sentinel that accepts connections and never answers (a paused process,
a black-holed host) cost 25 s per lookup, and three of them 78 s. Here every sentinel is asked
at the same time; the first that names a healthy primary answers the lookup and the others are
cancelled, so a hung or dead sentinel costs nothing while another one answers, and a lookup
never takes longer than ``LOOKUP_TIMEOUT``. A sentinel that timed out is demoted for
``DEMOTED_FOR``: still asked, but not waited for once the others have said no (right after a
failover they may not name the new primary yet, and the lookup is tried again at once rather
than after the hung one's timeout). When none answers, the error is one line per
sentinel with its cause (connections.causes), not the clients' reprs.
"""

from __future__ import annotations

from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.exceptions import TimeoutError as RedisTimeoutError

from edged.connect.causes import cause

# Per lookup, for every sentinel at once: sentinels answer SENTINEL MASTERS in microseconds on
# a working network, and a lookup is what a failover waits for.
LOOKUP_TIMEOUT = 2.0
# A sentinel that timed out is not waited for, for this long, once the others have answered.
DEMOTED_FOR = 30.0


def _address(sentinel: Redis) -> str:
    kwargs = sentinel.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


class BoundedSentinel(Sentinel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Sentinels that timed out lately, by index: until then a lookup does not wait for
        # them once every other sentinel has answered (they are still asked).
        self._demoted_until: dict[int, float] = {}

    async def discover_master(self, service_name: str) -> Any:
        found: list[tuple[str, Any]] = []
        problems: dict[int, str] = {}
        now = anyio.current_time()
        demoted = {i for i, until in self._demoted_until.items() if until > now}
        waiting = set(range(len(self.sentinels))) - demoted

        async def ask(index: int, sentinel: Redis, scope: anyio.CancelScope) -> None:
            try:
                with anyio.fail_after(LOOKUP_TIMEOUT):
                    masters = await sentinel.sentinel_masters()
            except Exception as exc:  # every failure is reported, one line each
                problems[index] = cause(exc)
                if isinstance(exc, TimeoutError | RedisTimeoutError):
                    self._demoted_until[index] = anyio.current_time() + DEMOTED_FOR
                masters = None
            else:
                self._demoted_until.pop(index, None)
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if state and self.check_master_state(state, service_name):
                found.append((state["ip"], state["port"]))
                scope.cancel()  # one answer is enough
                return
            if masters is not None:
                problems[index] = f"knows no healthy primary named {service_name!r}"
            waiting.discard(index)
            if not waiting and demoted:
                scope.cancel()  # every sentinel not demoted has said no: do not wait for the rest

        async with anyio.create_task_group() as tg:
            for index, sentinel in enumerate(self.sentinels):
                tg.start_soon(ask, index, sentinel, tg.cancel_scope)
        if found:
            return found[0]
        said = "; ".join(
            f"{_address(s)} {problems.get(i, 'timed out lately, not waited for')}"
            for i, s in enumerate(self.sentinels))
        raise MasterNotFoundError(f"no sentinel named a primary for {service_name!r}: {said}")
