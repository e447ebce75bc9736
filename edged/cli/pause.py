"""``edged pause`` / ``edged resume``: stop and restart reading a stream on every daemon."""

from __future__ import annotations

import getpass
import socket
import time
from typing import Annotated

import msgspec
import typer
from redis.asyncio import Redis

from edged.admin.shards import resolve
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
from edged.config import Config
from edged.keys import paused_key
from edged.layout import key_prefix


def _fields(cfg: Config, stream: str, group: str, shard: int | None) -> list[str]:
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
    who = f"{getpass.getuser()}@{socket.gethostname()}"

    async def go(client: Redis, cfg: Config) -> list[str]:
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
    async def go(client: Redis, cfg: Config) -> list[str]:
        fields = _fields(cfg, stream, group, shard)
        await client.hdel(paused_key(key_prefix(cfg)), *fields)
        return fields

    fields = run_once(config, url, go)
    if as_json:
        print_json({"resumed": fields})
        return
    for field in fields:
        typer.echo(f"resumed {field}")
