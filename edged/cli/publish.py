"""``edged publish``: add entries in edged's shape (body in the ``payload`` field)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import anyio
import msgspec
import typer

from edged.cli.options import ConfigOpt, JsonOpt, UrlOpt, exits, redis_client, resolve_connection
from edged.codec import encode_json_text
from edged.config import Config
from edged.durations import Duration
from edged.errors import UsageError
from edged.sharding import MAX_SHARDS

if TYPE_CHECKING:
    from edged.publish import Published


def _read_stdin_lines() -> Iterator[tuple[int, str]]:
    for n, line in enumerate(sys.stdin, start=1):
        if line.strip():
            yield n, line


def _bodies(data: str | None) -> list[bytes]:
    """The JSON bodies to publish: the argument, or one per line of stdin for ``-``."""
    if data is None:
        raise UsageError("give a JSON body, or - to read JSON lines from stdin")
    if data != "-":
        try:
            return [encode_json_text(data)]
        except ValueError as exc:
            raise UsageError(f"{exc}; nothing was published") from None
    bodies = []
    for n, line in _read_stdin_lines():
        try:
            bodies.append(encode_json_text(line))
        except ValueError as exc:
            raise UsageError(f"stdin line {n}: {exc}; nothing was published") from None
    return bodies


def _parse_fields(items: list[str]) -> dict[str, bytes]:
    fields: dict[str, bytes] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--field {item!r}: write it as key=value")
        if key == "payload":
            raise UsageError("--field payload=...: the body is the JSON argument, not a field")
        fields[key] = value.encode()
    return fields


@exits
def publish(
    stream: Annotated[str, typer.Argument(help="Stream to add to.")],
    data: Annotated[
        str | None,
        typer.Argument(help="JSON body, or - to read one JSON document per line of stdin."),
    ] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", "-f", help="Extra field k=v (repeatable).")
    ] = None,
    maxlen: Annotated[
        int | None, typer.Option(help="Trim the stream to about N entries.", min=1)
    ] = None,
    wait_replicas: Annotated[
        int, typer.Option(help="Wait until N replicas have the entries (WAIT); exit 1 if fewer.",
                          min=0)
    ] = 0,
    wait_timeout: Annotated[
        str, typer.Option(help="How long to wait for the replicas.")
    ] = "1s",
    key: Annotated[
        str | None, typer.Option(help="Sharded stream: the shard is picked from this key "
                                      "(CRC-32 mod shards), so one key's entries keep their order.")
    ] = None,
    shards: Annotated[
        int | None, typer.Option(help="The stream's shard count; default: its `shards` in the "
                                      "config, else 1.", min=1, max=MAX_SHARDS)
    ] = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add entries to a stream in edged's shape (body in the `payload` field).

    A sharded stream (`--shards N`, or `shards` in the config) gets each entry on the shard of
    `--key`, or spread evenly without one; each line then shows the shard and the id.
    """
    from edged.publish import publish_sharded

    fields = _parse_fields(field or [])
    try:
        timeout = Duration.parse(wait_timeout).seconds
    except ValueError as exc:
        raise UsageError(f"--wait-timeout: {exc}") from None
    bodies = _bodies(data)
    cfg, resolved_url = resolve_connection(config, url)
    count = shards or _configured_shards(cfg, stream)

    async def go() -> list[Published]:
        async with redis_client(cfg, resolved_url) as client:
            return await publish_sharded(
                client, stream, count, bodies, key=key, fields=fields, maxlen=maxlen,
                wait_replicas=wait_replicas, wait_timeout=timeout,
            )

    published = anyio.run(go)  # NotReplicated: exit 1, naming the entries concerned
    _show(stream, count, published, as_json)


def _configured_shards(cfg: Config, stream: str) -> int:
    """The stream's ``shards`` in the config (the largest, if groups disagree), else 1."""
    return max((s.shards for s in cfg.streams if s.stream == stream), default=1)


def _show(stream: str, shards: int, published: list[Published], as_json: bool) -> None:
    if as_json:
        out: dict[str, object] = {"stream": stream, "ids": [p.id for p in published]}
        if shards > 1:
            out["shards"] = [p.stream for p in published]
        typer.echo(msgspec.json.encode(out).decode())
        return
    for p in published:
        typer.echo(f"{p.stream} {p.id}" if shards > 1 else p.id)
