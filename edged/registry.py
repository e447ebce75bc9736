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

from edged.introspect import SCAN_COUNT, _float, _int, _text, server_ms
from edged.keys import daemon_key, daemons_pattern, seen_key


class Daemon(msgspec.Struct, frozen=True):
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


class Registry(msgspec.Struct, frozen=True):
    """The live daemons (by consumer name) and when each consumer last beat."""

    daemons: dict[str, Daemon]
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


def _daemon(raw: dict[bytes, bytes], now: float) -> Daemon | None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if "consumer" not in fields:
        return None  # expired between SCAN and HGETALL
    try:
        streams = [str(s) for s in json.loads(fields.get("streams", "[]"))]
    except ValueError:
        streams = []
    started = _float(fields.get("started"))
    beat = _float(fields.get("beat"))
    return Daemon(
        consumer=fields["consumer"],
        host=fields.get("host"),
        pid=_int(fields.get("pid")),
        version=fields.get("version"),
        streams=streams,
        started=started,
        uptime_seconds=None if started is None else max(now - started, 0.0),
        beat_age_seconds=None if beat is None else max(now - beat, 0.0),
        ready=fields.get("ready") == "1",
        in_flight=_int(fields.get("in-flight")),
        processed=_int(fields.get("processed")),
        failed=_int(fields.get("failed")),
        dead_lettered=_int(fields.get("dead-lettered")),
    )


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
    daemons: dict[str, Daemon] = {}
    for key, raw in zip(keys, replies[:-1], strict=True):
        d = _daemon(raw or {}, now_ms / 1000)
        if d is not None and daemon_key(prefix, d.consumer) == _text(key):
            daemons[d.consumer] = d
    seen = {_text(k): n for k, v in (replies[-1] or {}).items() if (n := _int(v)) is not None}
    return Registry(daemons=dict(sorted(daemons.items())), seen_ms=seen, now_ms=now_ms)
