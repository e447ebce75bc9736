"""``edged pause`` / ``edged resume``: stop and restart reading a stream on every daemon."""

import time
from typing import TYPE_CHECKING, Annotated

import typer

from edged.cli.inspect import ShardOpt
from edged.cli.options import (
    ConfigOpt,
    GroupOpt,
    JsonOpt,
    StreamArg,
    TimeoutOpt,
    UrlOpt,
    exits,
    run_once,
)
from edged.cli.render import print_json
from edged.keys import paused_key

# The library, the config and msgspec are imported in the commands: start-up time (see
# edged/cli/__init__.py).
if TYPE_CHECKING:
    from redis.asyncio import Redis

    from edged.config import Config


def _fields(cfg: "Config", stream: str, group: str, shard: int | None) -> list[str]:
    from edged.admin.shards import resolve

    target = resolve(cfg, stream, group, shard)
    return [f"{s}/{group}" for s in ([s.stream for s in target.shards] or [target.stream])]


@exits
def pause(
    stream: StreamArg,
    group: GroupOpt = "edged",
    reason: Annotated[str, typer.Option(help="Why, for `edged status` and the daemons' logs.")] = "",
    shard: ShardOpt = None,
    config: ConfigOpt = None, url: UrlOpt = None, timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop every daemon reading STREAM for GROUP, until `edged resume`: within a heartbeat
    interval they read and reclaim nothing more of it; handlers that run finish and are acked.
    A sharded stream of the config: every shard."""
    import getpass
    import socket

    import msgspec

    from edged.layout import key_prefix

    who = f"{getpass.getuser()}@{socket.gethostname()}"

    async def go(client: "Redis", cfg: "Config") -> list[str]:
        fields = _fields(cfg, stream, group, shard)
        value = msgspec.json.encode({"by": who, "at": int(time.time()), "reason": reason}).decode()
        await client.hset(paused_key(key_prefix(cfg)), mapping=dict.fromkeys(fields, value))
        return fields

    fields = run_once(config, url, go)
    if as_json:
        print_json({"paused": fields})
        return
    for field in fields:
        typer.echo(f"paused {field}: daemons stop reading it within their heartbeat interval "
                   "(`edged status` shows which did)")


@exits
def resume(
    stream: StreamArg,
    group: GroupOpt = "edged",
    shard: ShardOpt = None,
    config: ConfigOpt = None, url: UrlOpt = None, timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Let every daemon read STREAM for GROUP again (after `edged pause`)."""
    from edged.layout import key_prefix

    async def go(client: "Redis", cfg: "Config") -> list[str]:
        fields = _fields(cfg, stream, group, shard)
        await client.hdel(paused_key(key_prefix(cfg)), *fields)
        return fields

    fields = run_once(config, url, go)
    if as_json:
        print_json({"resumed": fields})
        return
    for field in fields:
        typer.echo(f"resumed {field}")
