"""What the inspection modules share: their errors, the server's clock and small helpers.

The inspection library looks inside consumer groups; queries only, plus the two operator
actions ``claim`` and ``ack``. Its results are msgspec Structs whose field names are the stable
``--json`` output of ``edged pending``, ``groups``, ``consumers``, ``status``, ``claim`` and
``ack`` (see cli_inspect.py and README.md). It is split by job:

- registry.py: the live daemons, from their heartbeat records;
- pending.py: pending entries of a group and its consumers;
- verdicts.py: group samples, their verdicts, and the groups and status reports;
- operate.py: the ``claim`` and ``ack`` actions;
- shards.py: which physical streams a STREAM argument names (a sharded logical stream's
  shards), and where each shard sits.

Ages of entries come from the millisecond part of their id, measured against the server's
clock (``TIME``), so a skewed operator host does not distort them.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from edged.config import Config, StreamConfig
from edged.errors import EdgedError
from edged.ids import id_ms
from edged.layout import is_cluster, physical_streams
from edged.naming import dead_letter_names

SCAN_COUNT = 1000
PAGE = 500

log = logging.getLogger("edged.inspect")


class NotFound(EdgedError):
    """The stream or group asked for does not exist."""


class NotPending(EdgedError):
    """``claim`` was given ids that are not pending in the group; nothing was claimed."""


def age_of(now_ms: int, entry_id: str | None) -> float | None:
    if entry_id is None:
        return None
    return max(now_ms - id_ms(entry_id), 0) / 1000


async def server_ms(client: Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


def stream_config(cfg: Config, stream: str, group: str) -> StreamConfig | None:
    """The config of the physical ``stream`` (a shard's, names resolved), if configured."""
    for p in physical_streams(cfg):
        if p.cfg.stream == stream and p.cfg.group == group:
            return p.cfg
    return None


def default_dead_letter_of(cfg: Config, stream: str) -> str:
    """The dead-letter stream of a stream the config does not list (naming.py, per mode)."""
    return dead_letter_names(stream, 1, None, is_cluster(cfg))[0]


def dead_letter_of(cfg: Config, stream: str, group: str) -> str:
    """The group's dead-letter stream: from the config if the pair is there, else the default."""
    s = stream_config(cfg, stream, group)
    return s.dead_letter_stream if s is not None else default_dead_letter_of(cfg, stream)


def stuck_after(cfg: Config, stream: str, group: str) -> float:
    """Idle time past which a live edged would have reclaimed (or leased) a pending entry."""
    s = stream_config(cfg, stream, group) or StreamConfig(stream=stream, group=group, handler="x:y")
    return s.claim_idle.seconds + s.claim_interval.seconds


def nogroup_error(exc: ResponseError, stream: str, group: str | None = None) -> EdgedError:
    message = str(exc)
    if "NOGROUP" in message or "no such key" in message.lower():
        what = f"group {group!r} on stream {stream!r}" if group else f"stream {stream!r}"
        return NotFound(f"no {what}")
    return EdgedError(f"Redis refused: {message}")


async def groups_of(client: Redis, stream: str) -> list[dict[str, Any]] | None:
    """XINFO GROUPS, or None if ``stream`` is not a stream (or not ours to read)."""
    try:
        return list(await client.xinfo_groups(stream))
    except NoPermissionError:
        # A stream found by SCAN outside this ACL user's key patterns: not one of ours.
        log.warning("no permission to read stream %s; left out", stream)
        return None
    except ResponseError as exc:
        message = str(exc).lower()
        if "no such key" in message or "wrongtype" in message:
            return None
        raise
