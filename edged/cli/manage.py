"""``edged group create|set-id|delete`` and ``edged consumer delete``: admin/manage.py."""

from typing import TYPE_CHECKING, Annotated

import typer

from edged.cli.inspect import ShardOpt
from edged.cli.options import ConfigOpt, JsonOpt, StreamArg, TimeoutOpt, UrlOpt, exits, run_once
from edged.cli.render import print_json
from edged.errors import UsageError

# The library (edged.admin, which imports redis) and the config are imported in the commands:
# start-up time (see edged/cli/__init__.py).
if TYPE_CHECKING:
    from redis.asyncio import Redis

    from edged.admin.manage import ConsumerDeletion, GroupChange
    from edged.config import Config

group_app = typer.Typer(
    help="Create a consumer group, move its last-delivered id, delete it.",
    no_args_is_help=True, rich_markup_mode="markdown",
)
consumer_app = typer.Typer(help="Delete a consumer of a group.", no_args_is_help=True,
                           rich_markup_mode="markdown")

GroupArg = Annotated[str, typer.Argument(help="The consumer group.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Say what would change; change nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Really change it.")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Even though live daemons read the group (they go on as if nothing happened).")]


def _streams(cfg: "Config", stream: str, group: str, shard: int | None) -> list[str]:
    from edged.admin.shards import resolve

    target = resolve(cfg, stream, group, shard)
    return [s.stream for s in target.shards] or [target.stream]


def _confirm(dry_run: bool, yes: bool, what: str) -> None:
    if dry_run and yes:
        raise UsageError("--dry-run or --yes, not both")
    if not (dry_run or yes):
        raise UsageError(f"{what}: add --dry-run to see what would change, or --yes to do it")


def _show(changes: "list[GroupChange]", as_json: bool) -> None:
    if as_json:
        print_json(changes)
        return
    for c in changes:
        verb = {"create": "created", "set-id": "moved", "delete": "deleted"}[c.action]
        head = f"{c.stream} group {c.group}: " + (verb if c.done else f"would be {verb}")
        if c.action == "set-id":
            head += (f" from {c.last_delivered_before} to {c.last_delivered_after}: "
                     f"{c.delivered_again} entries delivered again, {c.skipped} skipped"
                     f" (counted up to 100000); {c.pending} pending stay pending")
        elif c.action == "delete":
            head += f"; its {c.pending} pending entries go with it"
        else:
            head += f" at {c.last_delivered_after}"
        typer.echo(head)


@group_app.command("create", epilog="**Example:** `edged group create orders audit --id 0`")
@exits
def create(
    stream: StreamArg, group: GroupArg,
    start_id: Annotated[str, typer.Option(
        "--id", help="The group's last-delivered id: $ (only new entries), 0 (the whole "
        "stream) or an entry id.")] = "$",
    shard: ShardOpt = None, dry_run: DryRunOpt = False,
    config: ConfigOpt = None, url: UrlOpt = None, timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create GROUP on STREAM (and the stream if it does not exist); a sharded stream of the
    config: on every shard. A group that exists is refused (exit 1), untouched."""
    from edged.admin.manage import create_group

    async def go(client: "Redis", cfg: "Config") -> "list[GroupChange]":
        return await create_group(client, _streams(cfg, stream, group, shard), group, start_id,
                                  dry_run)

    _show(run_once(config, url, go), as_json)


@group_app.command("set-id", epilog="**Example:** `edged group set-id orders edged --to-time 2h "
                   "--dry-run`")
@exits
def set_id(
    stream: StreamArg, group: GroupArg,
    to_id: Annotated[str | None, typer.Option("--to-id", help="Set it to this entry id.")] = None,
    to_time: Annotated[str | None, typer.Option(
        "--to-time", help="Deliver from this time on: ISO 8601 (2026-11-30T12:00:00Z) or a "
        "duration ago (2h).")] = None,
    to_end: Annotated[bool, typer.Option("--to-end", help="Skip to the newest entry.")] = False,
    dry_run: DryRunOpt = False, yes: YesOpt = False, force: ForceOpt = False,
    shard: ShardOpt = None,
    config: ConfigOpt = None, url: UrlOpt = None, timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move GROUP's last-delivered id (XGROUP SETID): back, to deliver entries again; forward,
    to skip them. Pending entries stay pending. Refused (exit 1) while a live daemon reads the
    group, unless --force."""
    from edged.admin.manage import set_group_id, target_id
    from edged.admin.registry import read_registry
    from edged.layout import key_prefix

    _confirm(dry_run, yes, "set-id")

    async def go(client: "Redis", cfg: "Config") -> "list[GroupChange]":
        streams = _streams(cfg, stream, group, shard)
        if to_id is not None and len(streams) > 1:
            raise UsageError(f"{stream} has {len(streams)} shards: an id belongs to one; "
                             "give --shard, or use --to-time / --to-end")
        to = await target_id(client, to_id, to_time, to_end)
        registry = await read_registry(client, key_prefix(cfg))
        return await set_group_id(client, streams, group, to, registry, dry_run, force)

    _show(run_once(config, url, go), as_json)


@group_app.command("delete", epilog="**Example:** `edged group delete orders old-audit --yes`")
@exits
def delete(
    stream: StreamArg, group: GroupArg,
    dry_run: DryRunOpt = False, yes: YesOpt = False, force: ForceOpt = False,
    shard: ShardOpt = None,
    config: ConfigOpt = None, url: UrlOpt = None, timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete GROUP (XGROUP DESTROY) and its pending entries. Refused (exit 1) while a live
    daemon reads it (it would create the group again at its start-id), unless --force."""
    from edged.admin.manage import delete_group
    from edged.admin.registry import read_registry
    from edged.layout import key_prefix

    _confirm(dry_run, yes, "delete")

    async def go(client: "Redis", cfg: "Config") -> "list[GroupChange]":
        registry = await read_registry(client, key_prefix(cfg))
        return await delete_group(client, _streams(cfg, stream, group, shard), group, registry,
                                  dry_run, force)

    _show(run_once(config, url, go), as_json)


@consumer_app.command("delete", epilog="**Example:** `edged consumer delete orders old-host "
                      "-g edged --force`")
@exits
def delete_one(
    stream: StreamArg,
    consumer: Annotated[str, typer.Argument(help="The consumer to delete.")],
    group: Annotated[str, typer.Option("--group", "-g", help="Consumer group.")] = "edged",
    force: Annotated[bool, typer.Option(
        "--force", help="Hand its pending entries back to the group first (any live daemon "
        "reclaims them at once), and delete it even if it is a live daemon.")] = False,
    config: ConfigOpt = None, url: UrlOpt = None, timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete CONSUMER from GROUP (XGROUP DELCONSUMER), only when it owns no pending entry
    (exit 1 otherwise: deleting it would drop them for good) and is no live daemon."""
    from edged.admin.manage import delete_consumer
    from edged.admin.registry import read_registry
    from edged.layout import key_prefix

    async def go(client: "Redis", cfg: "Config") -> "ConsumerDeletion":
        registry = await read_registry(client, key_prefix(cfg))
        return await delete_consumer(client, stream, group, consumer, registry, force)

    result = run_once(config, url, go)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{stream} group {group}: consumer {consumer} deleted"
               + (f"; its {len(result.handed_back)} pending entries handed back"
                  if result.handed_back else ""))
