"""``edged claim|ack``: an operator moves or drops pending entries (library: admin/operate.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from edged.admin.dlq import check_entry_id
from edged.admin.operate import ack as ack_entries
from edged.admin.operate import claim as claim_entries
from edged.cli.options import ConfigOpt, GroupOpt, IdsArg, JsonOpt, StreamArg, UrlOpt, exits, run_once
from edged.cli.render import print_json
from edged.errors import EXIT_FAILURE, UsageError


@exits
def claim(
    stream: StreamArg,
    ids: IdsArg,
    to: Annotated[str, typer.Option("--to", help="The consumer to give the entries to.")],
    group: GroupOpt = "edged",
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give pending entries to consumer --to (XCLAIM, min-idle 0; the delivery count stays).

    All or nothing: if any id is not pending, exit 1 naming them and claim none.
    """
    for entry_id in ids:
        check_entry_id(entry_id, "ID")
    result = run_once(config, url, lambda client, cfg: claim_entries(client, stream, group, ids, to))
    if as_json:
        print_json(result)
    else:
        typer.echo(f"claimed {len(result.claimed)} entries of {stream} group {group} for {to}: "
                   + " ".join(result.claimed))


@exits
def ack(
    stream: StreamArg,
    ids: IdsArg,
    group: GroupOpt = "edged",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Really acknowledge.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Same as --yes, for scripts.")] = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge pending entries without running them: they are never delivered again.

    Asks for --yes (or --force); exit 1 if some ids were not pending (the others are acked).
    """
    for entry_id in ids:
        check_entry_id(entry_id, "ID")
    if not (yes or force):
        raise UsageError(f"ack drops {len(ids)} entries from group {group!r} of {stream!r} unhandled; "
                         "add --yes to do it")
    result = run_once(config, url, lambda client, cfg: ack_entries(client, stream, group, ids))
    if as_json:
        print_json(result)
    else:
        typer.echo(f"acked {len(result.acked)} entries of {stream} group {group}"
                   + (": " + " ".join(result.acked) if result.acked else ""))
    if result.not_pending:
        typer.echo(f"edged: not pending: {', '.join(result.not_pending)}", err=True)
        raise typer.Exit(EXIT_FAILURE)
