"""``edged publish``: add entries in edged's shape (body in the ``payload`` field)."""

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edged.cli.options import ConfigOpt, JsonOpt, UrlOpt, exits, redis_client, resolve_connection
from edged.durations import Duration
from edged.errors import UsageError
from edged.sharding import MAX_SHARDS

# anyio, msgspec and the library are imported where they are used: start-up time (see
# edged/cli/__init__.py).
if TYPE_CHECKING:
    from edged.config import Config
    from edged.publish import Published


def _read_stdin_lines() -> Iterator[tuple[int, str]]:
    for n, line in enumerate(sys.stdin, start=1):
        if line.strip():
            yield n, line


def _bodies(data: str | None) -> list[bytes]:
    """The JSON bodies to publish: the argument, or one per line of stdin for ``-``."""
    from edged.codec import encode_json_text

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


FieldOpt = Annotated[
    list[str] | None, typer.Option("--field", "-f", help="Extra field k=v (repeatable).")]
MaxlenOpt = Annotated[int | None, typer.Option(help="Trim the stream to about N entries.", min=1)]
WaitReplicasOpt = Annotated[int, typer.Option(
    help="Wait until N replicas have the entries (WAIT); exit 1 if fewer.", min=0)]
WaitTimeoutOpt = Annotated[str, typer.Option(help="How long to wait for the replicas.")]
KeyOpt = Annotated[str | None, typer.Option(
    help="Sharded stream: the shard is picked from this key (CRC-32 mod shards), so one key's "
    "entries keep their order.")]
ShardsOpt = Annotated[int | None, typer.Option(
    help="The stream's shard count; default: its `shards` in the config, else 1.", min=1,
    max=MAX_SHARDS)]
ViaDaemonOpt = Annotated[bool, typer.Option(
    "--via-daemon", help="Go through the local daemon's outbox (the config's [outbox] socket, "
    "else [daemon] listen); exit 69 if no daemon answers, 75 if its outbox is full.")]
DirectOpt = Annotated[bool, typer.Option(
    "--direct", help="Straight to Redis, even when the config has [outbox] and a daemon "
    "answers.")]


@exits
def publish(
    stream: Annotated[str, typer.Argument(help="Stream to add to.")],
    data: Annotated[str | None, typer.Argument(
        help="JSON body, or - to read one JSON document per line of stdin.")] = None,
    field: FieldOpt = None,
    maxlen: MaxlenOpt = None,
    wait_replicas: WaitReplicasOpt = 0,
    wait_timeout: WaitTimeoutOpt = "1s",
    key: KeyOpt = None,
    shards: ShardsOpt = None,
    via_daemon: ViaDaemonOpt = False,
    direct: DirectOpt = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add entries to a stream in edged's shape (body in the `payload` field).

    A sharded stream (`--shards N`, or `shards` in the config) gets each entry on the shard of
    `--key`, or spread evenly without one; each line then shows the shard and the id.

    With `[outbox]` in the config and its daemon running (or `--via-daemon`), the entries go to
    the daemon's outbox: they are on its disk when this returns, and in Redis once it forwards
    them; each line shows the entry's message id (`edged-msgid`) instead of the Redis id.
    """
    fields = _parse_fields(field or [])
    try:
        timeout = Duration.parse(wait_timeout).seconds
    except ValueError as exc:
        raise UsageError(f"--wait-timeout: {exc}") from None
    bodies = _bodies(data)
    cfg, resolved_url = resolve_connection(config, url)
    where = _through_daemon(cfg, via_daemon, direct, url)
    if where is not None:
        if maxlen is not None or wait_replicas or shards is not None:
            raise UsageError("--maxlen, --wait-replicas and --shards are the daemon's to "
                             "choose ([outbox] wait-replicas, the stream's shards); give them "
                             "only with --direct")
        _publish_via_daemon(where, stream, bodies, fields, key, as_json)
        return
    count = shards or _configured_shards(cfg, stream)
    published = _publish_direct(cfg, resolved_url, stream, count, bodies, key=key, fields=fields,
                                maxlen=maxlen, wait_replicas=wait_replicas, wait_timeout=timeout)
    _show(stream, count, published, as_json)


def _publish_direct(cfg: "Config", url: str | None, stream: str, shards: int, bodies: list[bytes],
                    **options: Any) -> "list[Published]":
    """Straight to Redis; NotReplicated: exit 1, naming the entries concerned."""
    import anyio

    from edged.publish import publish_sharded

    async def go() -> "list[Published]":
        async with redis_client(cfg, url) as client:
            return await publish_sharded(client, stream, shards, bodies, **options)

    return anyio.run(go)


def _through_daemon(cfg: "Config", via_daemon: bool, direct: bool, url: str | None) -> str | None:
    """Where the daemon takes publishes if this publish goes through it, else None."""
    from edged.outbox.client import DaemonUnavailable, endpoints, reachable

    if via_daemon and (direct or url):
        raise UsageError("--via-daemon goes through the daemon: not with --direct or --url")
    if direct or url:
        return None
    where = reachable(cfg)
    if via_daemon and where is None:
        tried = endpoints(cfg)
        if not tried:
            raise UsageError("--via-daemon: the config has no [outbox] (with a socket, or "
                             "[daemon] listen and http = true) to say where the daemon is")
        raise DaemonUnavailable(f"no daemon takes publishes at {' or '.join(tried)}; nothing "
                                "was published")
    return where


def _publish_via_daemon(where: str, stream: str, bodies: list[bytes], fields: dict[str, bytes],
                        key: str | None, as_json: bool) -> None:
    import msgspec

    from edged.outbox.client import publish_via_daemon

    reply = publish_via_daemon(where, stream, bodies, fields, key)
    if as_json:
        out: dict[str, object] = {"stream": stream, "accepted": reply.accepted,
                                  "msgids": reply.ids, "via": where}
        if reply.shards:
            out["shards"] = reply.shards
        typer.echo(msgspec.json.encode(out).decode())
        return
    if reply.shards:
        for shard, msgid in zip(reply.shards, reply.ids, strict=True):
            typer.echo(f"{shard} {msgid}")
        return
    for msgid in reply.ids:
        typer.echo(msgid)


def _configured_shards(cfg: "Config", stream: str) -> int:
    """The stream's ``shards`` in the config (the largest, if groups disagree), else 1."""
    return max((s.shards for s in cfg.streams if s.stream == stream), default=1)


def _show(stream: str, shards: int, published: "list[Published]", as_json: bool) -> None:
    import msgspec

    if as_json:
        out: dict[str, object] = {"stream": stream, "ids": [p.id for p in published]}
        if shards > 1:
            out["shards"] = [p.stream for p in published]
        typer.echo(msgspec.json.encode(out).decode())
        return
    for p in published:
        typer.echo(f"{p.stream} {p.id}" if shards > 1 else p.id)
