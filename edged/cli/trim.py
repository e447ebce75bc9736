"""``edged trim``: trim a stream now by its retention rule, or show what would go
(library: admin/retention.py; the rule: lua/trim.lua and README.md, "Retention")."""

from typing import TYPE_CHECKING, Annotated

import typer

from edged.cli.options import ConfigOpt, JsonOpt, UrlOpt, exits, run_once
from edged.cli.render import print_json
from edged.errors import UsageError

if TYPE_CHECKING:  # the library imports redis: imported when trim runs (start-up time)
    from edged.admin.retention import TrimReport
    from edged.scripts import TrimResult


def _holder(r: "TrimResult") -> str:
    if r.floor is None:
        return "no group needs any entry"
    who = f"group {r.holder}" if r.holder else "no consumer group (nothing has read the stream)"
    return f"held at {r.floor} by {who}"


def _line(r: "TrimResult", dry_run: bool) -> str:
    verb = "would trim" if dry_run else "trimmed"
    gone = (f"{verb} {r.trimmed} of {r.length} entries, {r.first_id} .. {r.last_id}"
            if r.trimmed else f"{verb} nothing of {r.length} entries")
    line = f"{r.stream}: {gone}; {_holder(r)}"
    if r.blocked:
        line += (f"; RETENTION-BLOCKED: entry {r.held_id} is kept {r.past_seconds:.0f}s past "
                 "retention")
    return line


def _render(report: "TrimReport") -> None:
    for r in report.streams:
        typer.echo(_line(r, report.dry_run))


@exits
def trim(
    stream: Annotated[str, typer.Argument(
        help="A stream of the config with retention or max-len (a sharded one: every shard), "
        "or a dead-letter stream with dead-letter-retention or dead-letter-max-len.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only show what would go and what holds the rest back.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Really trim.")] = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Trim STREAM now by the config's retention and max-len, never an entry a consumer group
    has not read or still has pending; --dry-run shows what would go and what holds it."""
    from edged.admin.retention import trim_streams

    if not (dry_run or yes):
        raise UsageError(f"trim deletes entries of {stream!r} for good; add --yes to do it, "
                         "or --dry-run to see what would go")
    report = run_once(config, url, lambda client, cfg: trim_streams(client, cfg, stream, dry_run))
    if as_json:
        print_json(report)
    else:
        _render(report)
