"""Following `edged pause` / `edged resume`: a hash in Redis every daemon reads each beat.

The hash ``<prefix>paused`` has a field ``"stream/group"`` per paused stream (the value says
who paused it, when and why). Every heartbeat interval this daemon reads it and pauses or
resumes its consumers to match: a paused stream is not read and not reclaimed; handlers that
run finish and are acked. Redis away: the last state stays (nothing is read then anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edged.connect.transient import TRANSIENT_ERRORS
from edged.consume.consumer import StreamConsumer
from edged.keys import paused_key
from edged.replies import text

log = logging.getLogger("edged.daemon")


class PauseWatch:
    def __init__(self, client: Redis, prefix: str, streams: Sequence[StreamConsumer],
                 every: float) -> None:
        self.client = client
        self.key = paused_key(prefix)
        self.streams = streams
        self.every = every

    async def run(self) -> None:
        while True:
            await self.check()
            await anyio.sleep(self.every)

    async def check(self) -> None:
        try:
            raw = await self.client.hgetall(self.key)
        except (*TRANSIENT_ERRORS, RedisError) as exc:
            log.debug("cannot read the paused streams (%s); keeping the last state", exc)
            return
        paused = {text(k): text(v) for k, v in raw.items()}
        for s in self.streams:
            why = paused.get(f"{s.stream}/{s.group}")
            if (why is not None) == s.paused:
                continue
            s.set_paused(why is not None)
            if why is not None:
                log.warning("stream %s (%s): paused (%s); running handlers finish, nothing "
                            "new is read until `edged resume`", s.stream, s.group, why)
            else:
                log.info("stream %s (%s): resumed", s.stream, s.group)
