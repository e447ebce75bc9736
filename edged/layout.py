"""The physical streams behind a config's ``[[streams]]``: shards, with their names resolved.

The daemon reads physical streams; the CLI sums them back into the logical stream an operator
configured. Names come from naming.py.
"""

from __future__ import annotations

from dataclasses import dataclass

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
