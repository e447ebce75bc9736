"""Safe retention from the operator's side: ``edged trim`` and the RETENTION-BLOCKED verdict.

Both run lua/trim.lua, the same script the daemons run: ``dry`` and ``probe`` say where the
trim would stop and what holds it without trimming, ``trim`` trims. A dry run then counts what
would go here, by pages, so that a large backlog does not block the server for the count.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from edged.config import Config
from edged.errors import UsageError
from edged.layout import TrimTarget, trim_targets
from edged.replies import text
from edged.scripts import Scripts, TrimResult

PAGE = 10_000
"""Entries per XRANGE when a dry run counts what would go."""


class TrimReport(msgspec.Struct, frozen=True):
    stream: str
    dry_run: bool
    trimmed: int
    """Entries trimmed (or, with --dry-run, that would be), over every stream below."""
    streams: list[TrimResult]
    """One per physical stream (a sharded stream's shards), or the dead-letter stream asked for."""


def targets_for(cfg: Config, stream: str) -> list[TrimTarget]:
    """The trim targets ``stream`` names: a configured stream (every shard of a sharded one),
    a shard by its own name, or a dead-letter stream with its own retention."""
    found = [t for t in trim_targets(cfg)
             if t.stream == stream or (t.logical == stream and not t.dead_letter)]
    if not found:
        raise UsageError(f"no retention or max-len configured for {stream!r} (nor for a "
                         "dead-letter stream of that name) in the config: nothing to trim by")
    return found


async def trim_streams(client: Redis, cfg: Config, stream: str, dry_run: bool) -> TrimReport:
    """Trim now (or, ``dry_run``, count what would go) by the config's rule for ``stream``."""
    targets = targets_for(cfg, stream)
    scripts = Scripts(client)
    mode: Literal["dry", "trim"] = "dry" if dry_run else "trim"
    results = []
    for t in targets:
        result = await scripts.trim(t.stream, t.retention_ms, t.max_len, mode, t.no_group)
        if dry_run:
            result = dataclasses.replace(result, trimmed=await count_below(client, result))
        results.append(result)
    return TrimReport(stream=stream, dry_run=dry_run, streams=results,
                      trimmed=sum(r.trimmed or 0 for r in results))


async def count_below(client: Redis, result: TrimResult) -> int:
    """How many entries a dry run's MINID point would trim (0 when it has none)."""
    if result.minid is None or result.first_id is None:
        return 0
    n, start = 0, "-"
    while True:
        rows = list(await client.xrange(result.stream, min=start, max=f"({result.minid}",
                                        count=PAGE) or [])
        n += len(rows)
        if len(rows) < PAGE:
            return n
        start = f"({text(rows[-1][0])}"


async def blocked_by(client: Redis, cfg: Config, stream: str) -> TrimResult | None:
    """The probe of a physical ``stream`` whose retention is blocked; None when it is not, it
    has no retention configured, or it is not a stream."""
    target = next((t for t in trim_targets(cfg) if t.stream == stream), None)
    if target is None:
        return None
    try:
        result = await Scripts(client).trim(stream, target.retention_ms, target.max_len, "probe",
                                            target.no_group)
    except ResponseError:  # not a stream, or gone
        return None
    return result if result.blocked else None
