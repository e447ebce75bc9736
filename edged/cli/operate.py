"""``edged claim|ack``: an operator moves or drops pending entries (library: admin/operate.py).

On a sharded stream of the config each id is acted on in the shard where it is pending;
``--shard`` (or the shard's own name as STREAM) says which shard when an id is in several.
"""

from typing import Annotated

import typer

from edged.cli.inspect import ShardOpt
from edged.cli.options import ConfigOpt, GroupOpt, IdsArg, JsonOpt, StreamArg, UrlOpt, exits, run_once
from edged.cli.render import print_json
from edged.errors import EXIT_FAILURE, UsageError


@exits
def claim(
    stream: StreamArg,
    ids: IdsArg,
    to: Annotated[str, typer.Option("--to", help="The consumer to give the entries to.")],
    group: GroupOpt = "edged",
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give pending entries to consumer --to (XCLAIM, min-idle 0; the delivery count stays).

    All or nothing: if any id is not pending, exit 1 naming them and claim none. On a sharded
    stream each id is claimed in the shard where it is pending (exit 2 if in several).
    """
    # The library (it imports redis) here, not at the top: start-up time (edged/cli/__init__.py).
    from edged.admin.dlq import check_entry_id
    from edged.admin.operate import claim_in
    from edged.admin.shards import resolve

    for entry_id in ids:
        check_entry_id(entry_id, "ID")
    result = run_once(config, url, lambda client, cfg: claim_in(
        client, resolve(cfg, stream, group, shard), group, ids, to))
    if as_json:
        print_json(result)
    else:
        typer.echo(f"claimed {len(result.claimed)} entries of {result.stream} group {group} for {to}: "
                   + " ".join(result.claimed))
        for part in result.shards or []:
            typer.echo(f"  shard {part.shard} {part.stream}: {' '.join(part.claimed)}")


@exits
def ack(
    stream: StreamArg,
    ids: IdsArg,
    group: GroupOpt = "edged",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Really acknowledge.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Same as --yes, for scripts.")] = False,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge pending entries without running them: they are never delivered again.

    Asks for --yes (or --force); exit 1 if some ids were not pending (the others are acked).
    On a sharded stream each id is acked in the shard where it is pending (exit 2, acking
    none, if one is pending in several).
    """
    from edged.admin.dlq import check_entry_id
    from edged.admin.operate import ack_in
    from edged.admin.shards import resolve

    for entry_id in ids:
        check_entry_id(entry_id, "ID")
    if not (yes or force):
        raise UsageError(f"ack drops {len(ids)} entries from group {group!r} of {stream!r} unhandled; "
                         "add --yes to do it")
    result = run_once(config, url, lambda client, cfg: ack_in(
        client, resolve(cfg, stream, group, shard), group, ids))
    if as_json:
        print_json(result)
    else:
        typer.echo(f"acked {len(result.acked)} entries of {result.stream} group {group}"
                   + (": " + " ".join(result.acked) if result.acked else ""))
        for part in result.shards or []:
            typer.echo(f"  shard {part.shard} {part.stream}: {' '.join(part.acked)}")
    if result.not_pending:
        typer.echo(f"edged: not pending: {', '.join(result.not_pending)}", err=True)
        raise typer.Exit(EXIT_FAILURE)
