"""The heartbeat registry: which daemons are alive, and when each consumer last beat.

A consumer is *alive* while its heartbeat record ``<prefix>daemon:<consumer>`` exists
(heartbeat.py writes it, with a TTL of three beats); ``<prefix>seen`` holds every consumer's
last beat, alive or not.
"""

from __future__ import annotations

import json
import re

import msgspec
from redis.asyncio import Redis

from edged.admin.lookup import SCAN_COUNT, server_ms
from edged.keys import (
    HB_BEAT,
    HB_CLAIM,
    HB_CONSUMER,
    HB_DEAD_LETTERED,
    HB_DEGRADED,
    HB_FAILED,
    HB_HOST,
    HB_IN_FLIGHT,
    HB_OUTBOX,
    HB_PAUSED,
    HB_PID,
    HB_PROCESSED,
    HB_READY,
    HB_STARTED,
    HB_STREAMS,
    HB_VERSION,
    daemon_key,
    daemons_pattern,
    seen_key,
)
from edged.replies import float_or_none, int_or_none, text


class DaemonRecord(msgspec.Struct, frozen=True):
    """One live daemon, from its heartbeat record."""

    consumer: str
    host: str | None
    pid: int | None
    version: str | None
    streams: list[str]
    """``"stream/group"`` pairs it reads."""
    started: float | None
    """Epoch seconds, by the daemon host's clock."""
    uptime_seconds: float | None
    beat_age_seconds: float | None
    ready: bool
    in_flight: int | None
    processed: int | None
    failed: int | None
    dead_lettered: int | None
    claim: dict[str, tuple[int, int]] = {}
    """``"stream/group"`` → (claim-idle ms, claim-interval ms): the daemon's own settings."""
    degraded: dict[str, str] = {}
    """``"stream/group"`` → what fails there now (WRONGTYPE, NOPERM...); empty when healthy."""
    outbox: int | None = None
    """Entries waiting in the daemon's outbox at its last beat; None without an outbox."""
    paused: list[str] = []
    """``"stream/group"`` it does not read now: `edged pause`."""

    def stuck_after(self, stream: str, group: str) -> float | None:
        """Seconds past which this daemon would have reclaimed a pending entry of the group."""
        settings = self.claim.get(f"{stream}/{group}")
        return None if settings is None else sum(settings) / 1000


class Registry(msgspec.Struct, frozen=True):
    """The live daemons (by consumer name) and when each consumer last beat."""

    daemons: dict[str, DaemonRecord]
    seen_ms: dict[str, int]
    now_ms: int

    def alive(self, consumer: str) -> bool:
        return consumer in self.daemons

    def host(self, consumer: str) -> str | None:
        d = self.daemons.get(consumer)
        return d.host if d else None

    def last_seen(self, consumer: str) -> float | None:
        ms = self.seen_ms.get(consumer)
        return None if ms is None else max(self.now_ms - ms, 0) / 1000

    def stuck_after(self, stream: str, group: str) -> float | None:
        """The longest reclaim horizon (claim-idle + claim-interval) of the live daemons reading
        the group, from their own heartbeat records; None when no live daemon says."""
        found = [t for d in self.daemons.values() if (t := d.stuck_after(stream, group)) is not None]
        return max(found) if found else None

    def streams(self) -> list[tuple[str, str]]:
        """``(stream, group)`` pairs read by live daemons."""
        pairs: list[tuple[str, str]] = []
        for d in self.daemons.values():
            for item in d.streams:
                stream, sep, group = item.rpartition("/")
                if sep:
                    pairs.append((stream, group))
        return pairs


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _daemon(raw: dict[bytes, bytes], now: float) -> DaemonRecord | None:
    fields = {text(k): text(v) for k, v in raw.items()}
    if HB_CONSUMER not in fields:
        return None  # expired between SCAN and HGETALL
    try:
        streams = [str(s) for s in json.loads(fields.get(HB_STREAMS, "[]"))]
    except ValueError:
        streams = []
    started = float_or_none(fields.get(HB_STARTED))
    beat = float_or_none(fields.get(HB_BEAT))
    return DaemonRecord(
        consumer=fields[HB_CONSUMER],
        host=fields.get(HB_HOST),
        pid=int_or_none(fields.get(HB_PID)),
        version=fields.get(HB_VERSION),
        streams=streams,
        started=started,
        uptime_seconds=None if started is None else max(now - started, 0.0),
        beat_age_seconds=None if beat is None else max(now - beat, 0.0),
        ready=fields.get(HB_READY) == "1",
        in_flight=int_or_none(fields.get(HB_IN_FLIGHT)),
        processed=int_or_none(fields.get(HB_PROCESSED)),
        failed=int_or_none(fields.get(HB_FAILED)),
        dead_lettered=int_or_none(fields.get(HB_DEAD_LETTERED)),
        claim=_claims(fields.get(HB_CLAIM)),
        degraded=_degraded(fields.get(HB_DEGRADED)),
        outbox=int_or_none(fields.get(HB_OUTBOX)),
        paused=_paused(fields.get(HB_PAUSED)),
    )


def _paused(raw: str | None) -> list[str]:
    """The paused "stream/group" of a heartbeat record; empty when absent or garbled."""
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _claims(raw: str | None) -> dict[str, tuple[int, int]]:
    """The claim settings of a heartbeat record; empty when absent (older daemons) or garbled."""
    if not raw:
        return {}
    try:
        return msgspec.json.decode(raw, type=dict[str, tuple[int, int]])
    except msgspec.DecodeError:
        return {}


def _degraded(raw: str | None) -> dict[str, str]:
    """The degraded streams of a heartbeat record; empty when absent (older daemons) or garbled."""
    if not raw:
        return {}
    try:
        return msgspec.json.decode(raw, type=dict[str, str])
    except msgspec.DecodeError:
        return {}


async def read_registry(client: Redis, prefix: str) -> Registry:
    """Every live daemon's heartbeat record under ``prefix``, and the last-seen hash."""
    now_ms = await server_ms(client)
    pattern = daemons_pattern(_glob_escape(prefix))
    keys = [k async for k in client.scan_iter(match=pattern, count=SCAN_COUNT)]
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        pipe.hgetall(seen_key(prefix))
        replies = await pipe.execute()
    daemons: dict[str, DaemonRecord] = {}
    for key, raw in zip(keys, replies[:-1], strict=True):
        d = _daemon(raw or {}, now_ms / 1000)
        if d is not None and daemon_key(prefix, d.consumer) == text(key):
            daemons[d.consumer] = d
    seen = {text(k): n for k, v in (replies[-1] or {}).items() if (n := int_or_none(v)) is not None}
    return Registry(daemons=dict(sorted(daemons.items())), seen_ms=seen, now_ms=now_ms)
