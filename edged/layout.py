"""The physical streams behind a config's ``[[streams]]``: shards, with their names resolved.

The daemon reads physical streams; the CLI sums them back into the logical stream an operator
configured. Names come from naming.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from edged.config import Config, StreamConfig
from edged.naming import dead_letter_names, own_prefix
from edged.sharding import shard_names


def is_cluster(config: Config) -> bool:
    return config.redis.cluster is not None


def key_prefix(config: Config) -> str:
    """The prefix of edged's own keys for this config (a hash tag on a cluster)."""
    return own_prefix(config.daemon.key_prefix, is_cluster(config))


@dataclass(frozen=True)
class Physical:
    """One stream the daemon reads: a logical stream's shard, or an unsharded stream itself.

    ``cfg`` is the ``[[streams]]`` entry with ``stream`` and ``dead-letter`` set to this
    shard's names, so every part of the consumer reads them from one place.
    """

    cfg: StreamConfig
    logical: str
    index: int
    shards: int


def expand(s: StreamConfig, cluster: bool) -> list[Physical]:
    """The physical streams of one ``[[streams]]`` entry (checked at load: no ValueError)."""
    names = shard_names(s.stream, s.shards)
    dead = dead_letter_names(s.stream, s.shards, s.dead_letter, cluster)
    # shards=1 on the copy: a physical stream is never expanded again.
    return [Physical(msgspec.structs.replace(s, stream=name, dead_letter=dl, shards=1), s.stream, i,
                     s.shards)
            for i, (name, dl) in enumerate(zip(names, dead, strict=True))]


def physical_streams(config: Config) -> list[Physical]:
    """Every physical stream of the config, in config order, shards in index order."""
    cluster = is_cluster(config)
    return [p for s in config.streams for p in expand(s, cluster)]


@dataclass(frozen=True)
class TrimTarget:
    """One physical stream edged trims (lua/trim.lua), or the dead-letter stream of one."""

    stream: str
    group: str
    """The group edged reads it with; for a dead-letter stream, the group of its source."""
    logical: str
    """The ``[[streams]]`` stream it belongs to."""
    retention_ms: int
    """0: no retention."""
    max_len: int
    """0: no length limit."""
    dead_letter: bool
    """A dead-letter stream: plain retention when it has no group (no_group ``free``)."""
    interval: float
    """Seconds between two trims."""

    @property
    def no_group(self) -> Literal["hold", "free"]:
        return "free" if self.dead_letter else "hold"


def trim_targets(config: Config) -> list[TrimTarget]:
    """Every stream with retention or a length limit: physical streams, then their dead-letter
    streams (once each: shards may share one)."""
    found: dict[str, TrimTarget] = {}
    for p in physical_streams(config):
        s = p.cfg
        interval = s.trim_interval.seconds
        if s.retention is not None or s.max_len is not None:
            found.setdefault(s.stream, TrimTarget(
                s.stream, s.group, p.logical, s.retention.ms if s.retention else 0,
                s.max_len or 0, False, interval))
    for p in physical_streams(config):
        s = p.cfg
        if s.dead_letter_retention is not None or s.dead_letter_max_len is not None:
            found.setdefault(s.dead_letter_stream, TrimTarget(
                s.dead_letter_stream, s.group, p.logical,
                s.dead_letter_retention.ms if s.dead_letter_retention else 0,
                s.dead_letter_max_len or 0, True, interval))
    return list(found.values())
