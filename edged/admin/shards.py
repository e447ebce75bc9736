"""Which physical streams a command's STREAM names, and where each shard sits.

A STREAM argument names either a sharded logical stream of the config (``shards > 1``): the
command then works over all its physical streams, or over the one ``--shard`` picks; or one
physical stream (an unsharded stream, a shard by its own name, a stream the config does not
list), which the command works on as it always did. Only the config says which physical
streams form a logical one: a stream it does not list is taken as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edged.config import Config, StreamConfig
from edged.errors import UsageError
from edged.ids import id_key
from edged.layout import expand, is_cluster


@dataclass(frozen=True)
class Shard:
    """One physical stream of a sharded logical stream, names resolved (layout.py)."""

    stream: str
    index: int
    dead_letter: str


@dataclass(frozen=True)
class Target:
    """What a STREAM argument names: ``stream`` alone, or the ``shards`` of a logical stream."""

    stream: str
    shards: tuple[Shard, ...] = ()
    """The shards of a sharded logical stream, in index order; empty for one physical stream."""

    @property
    def sharded(self) -> bool:
        return bool(self.shards)


@dataclass(frozen=True)
class Place:
    """Where a physical stream sits in its sharded logical stream."""

    logical: str
    index: int
    shards: int


class Ambiguous(UsageError):
    """Ids found in several shards: which one is meant must be said (``--shard``)."""


def _sharded_entry(cfg: Config, stream: str, group: str | None) -> StreamConfig | None:
    # The entry for this group if there is one; else any: the shard names depend only on the
    # stream and the shard count, not on the group.
    entries = [s for s in cfg.streams if s.stream == stream and s.shards > 1]
    return next((s for s in entries if s.group == group), entries[0] if entries else None)


def shards_of(cfg: Config, stream: str, group: str | None = None) -> tuple[Shard, ...]:
    """The shards of ``stream`` if the config has it as a sharded logical stream, else ()."""
    entry = _sharded_entry(cfg, stream, group)
    if entry is None:
        return ()
    return tuple(Shard(p.cfg.stream, p.index, p.cfg.dead_letter_stream)
                 for p in expand(entry, is_cluster(cfg)))


def resolve(cfg: Config, stream: str, group: str | None = None, shard: int | None = None) -> Target:
    """The target of a STREAM argument; with ``shard``, that one shard as a physical stream.

    Raises UsageError when ``shard`` is given for a stream that is not sharded in the config,
    or is out of range.
    """
    shards = shards_of(cfg, stream, group)
    if shard is None:
        return Target(stream, shards)
    if not shards:
        raise UsageError(f"--shard: {stream!r} is not a sharded stream of the config")
    if not 0 <= shard < len(shards):
        raise UsageError(f"--shard {shard}: {stream!r} has shards 0 to {len(shards) - 1}")
    return Target(shards[shard].stream)


def places(cfg: Config) -> dict[tuple[str, str], Place]:
    """``(physical stream, group)`` → its place, for every shard of the config's sharded
    streams (unsharded streams are not listed: they are their own logical stream)."""
    cluster = is_cluster(cfg)
    return {(p.cfg.stream, p.cfg.group): Place(p.logical, p.index, p.shards)
            for s in cfg.streams if s.shards > 1 for p in expand(s, cluster)}


def ambiguous_ids(where: dict[str, list[int]], what: str) -> Ambiguous | None:
    """The error for ids found in several shards (``id`` → shard indexes), None if none is."""
    several = {i: found for i, found in where.items() if len(found) > 1}
    if not several:
        return None
    listed = ", ".join(f"{i} (shards {', '.join(map(str, found))})" for i, found in several.items())
    return Ambiguous(f"{what} in several shards: {listed}; name one with --shard I, or give the "
                     "shard's own stream name as STREAM")


def max_id(ids: Iterable[str | None]) -> str | None:
    """The highest of the ids given (Nones skipped), in stream order; None if none."""
    known = [i for i in ids if i is not None]
    return max(known, key=id_key) if known else None


def min_id(ids: Iterable[str | None]) -> str | None:
    """The lowest of the ids given (Nones skipped), in stream order; None if none."""
    known = [i for i in ids if i is not None]
    return min(known, key=id_key) if known else None


def page_end(ids: list[str], count: int) -> int:
    """How many of the merged, sorted ``ids`` one page of ``count`` takes: ``count``, plus any
    that share the last one's id. Ids of different shards may be equal, and the next page
    starts after that id on every shard, so a page never splits them."""
    end = min(count, len(ids))
    while 0 < end < len(ids) and ids[end] == ids[end - 1]:
        end += 1
    return end
