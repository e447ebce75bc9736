"""This daemon's record in Redis: who it is, what it reads, that it is alive.

Any host (and `edged status`) can read it. It expires a few beats after the daemon stops
beating, and a daemon holds its consumer name exclusively while its record lives.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

import anyio
import msgspec
from redis.exceptions import RedisError

from edged import __version__
from edged.connect.transient import TRANSIENT_ERRORS
from edged.errors import EdgedError
from edged.keys import (
    HB_BEAT,
    HB_CLAIM,
    HB_CONSUMER,
    HB_HOST,
    HB_PID,
    HB_STARTED,
    HB_STREAMS,
    HB_VERSION,
    daemon_key,
    seen_key,
)
from edged.scripts import Scripts

log = logging.getLogger("edged.heartbeat")


class ConsumerNameTaken(EdgedError):
    """Another live daemon holds this consumer name."""


class Heartbeat:
    def __init__(
        self,
        scripts: Scripts,
        prefix: str,
        consumer: str,
        interval: float,
        claims: dict[str, tuple[int, int]],
        status: Callable[[], dict[str, str]],
    ) -> None:
        """``claims``: ``"stream/group"`` → (claim-idle ms, claim-interval ms) of each stream read;
        ``status``: the live fields of the record (see DaemonStatus.heartbeat_fields)."""
        self.scripts = scripts
        self.consumer = consumer
        self.interval = interval
        self.key = daemon_key(prefix, consumer)
        self.seen = seen_key(prefix)
        self.instance = uuid.uuid4().hex
        self.ttl_ms = max(1000, int(interval * 3000))
        self._status = status
        self._identity = {
            HB_CONSUMER: consumer,
            HB_HOST: socket.gethostname(),
            HB_PID: str(os.getpid()),
            HB_VERSION: __version__,
            HB_STREAMS: msgspec.json.encode(list(claims)).decode(),
            HB_CLAIM: msgspec.json.encode(claims).decode(),
            HB_STARTED: f"{time.time():.3f}",
        }

    def record(self) -> dict[str, str]:
        """The fields of the heartbeat record as written now."""
        return {**self._identity, HB_BEAT: f"{time.time():.3f}", **self._status()}

    async def claim(self, takeover: bool) -> None:
        """First beat: take the consumer name, or raise ConsumerNameTaken."""
        holder = await self.scripts.heartbeat(
            self.key, self.seen, self.consumer, self.instance, self.ttl_ms, takeover, self.record()
        )
        if holder is not None and _previous_run_of_this_host(holder):
            # Our own earlier run crashed (kill -9, OOM): its record has not expired yet.
            log.info("consumer %s: the previous run here (pid %s) is gone; taking the name over",
                     self.consumer, holder.get("pid"))
            takeover = True
            holder = await self.scripts.heartbeat(
                self.key, self.seen, self.consumer, self.instance, self.ttl_ms, True, self.record()
            )
        if holder is not None:
            raise ConsumerNameTaken(_taken_message(self.consumer, holder))
        if takeover:
            log.warning("consumer %s: took the name over (--takeover)", self.consumer)

    async def run(self, superseded: Callable[[str], None]) -> None:
        """Beat every interval; call ``superseded`` if another instance took the name."""
        while True:
            await anyio.sleep(self.interval)
            try:
                holder = await self.scripts.heartbeat(
                    self.key, self.seen, self.consumer, self.instance, self.ttl_ms, False,
                    self.record(),
                )
            except (*TRANSIENT_ERRORS, RedisError) as exc:  # transient or not: beat again
                log.warning("heartbeat failed (%s)", exc)
                continue
            if holder is not None:
                superseded(_taken_message(self.consumer, holder))
                return

    async def end(self) -> None:
        """Remove the record at a clean stop so peers see us gone at once (the caller bounds
        how long this may take)."""
        try:
            await self.scripts.heartbeat_end(self.key, self.instance)
        except (*TRANSIENT_ERRORS, RedisError) as exc:
            log.warning("could not remove the heartbeat record (%s); it expires", exc)


def _previous_run_of_this_host(holder: dict[str, str]) -> bool:
    """The holder ran on this host and its process is gone."""
    if holder.get(HB_HOST) != socket.gethostname():
        return False
    try:
        pid = int(holder.get(HB_PID, ""))
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _taken_message(consumer: str, holder: dict[str, str]) -> str:
    try:
        ago = f"{time.time() - float(holder.get(HB_BEAT, '0')):.1f}s ago"
    except ValueError:
        ago = "recently"
    return (
        f"consumer name {consumer!r} is held by a live daemon on host {holder.get(HB_HOST, '?')} "
        f"(pid {holder.get(HB_PID, '?')}, last beat {ago}); stop it, give this host another "
        "[daemon] consumer name, or start with --takeover"
    )
