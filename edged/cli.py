"""The ``edged`` command: thin commands over library code, errors turned into exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Annotated

import anyio
import msgspec
import typer

from edged.cli_dlq import dlq_app
from edged.cli_health import register as register_check
from edged.cli_inspect import register as register_inspect
from edged.clitools import ConfigOpt, JsonOpt, UrlOpt, config_path, exits, redis_client, resolve_connection
from edged.codec import encode_json_text
from edged.config import DEFAULT_CONFIG_PATH, Config, demo_config, load_config
from edged.durations import Duration
from edged.errors import (
    EXIT_FAILURE,
    ConfigError,
    UsageError,
)
from edged.handlers import build_handler
from edged.logs import setup_logging

app = typer.Typer(
    name="edged",
    help="Redis Streams edge daemon: consume, reclaim, dead-letter, inspect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check or print the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(dlq_app, name="dlq")
register_check(app)
register_inspect(app)

def check_handlers(cfg: Config) -> None:
    for i, s in enumerate(cfg.streams):
        build_handler(s, i)


# --------------------------------------------------------------------------- start


@app.command()
@exits
def start(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    embedded: Annotated[
        bool, typer.Option("--embedded", help="Run the bundled valkey-server and use it.")
    ] = False,
    log_format: Annotated[str, typer.Option(help="text or json.")] = "text",
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    takeover: Annotated[
        bool,
        typer.Option("--takeover", help="Take the consumer name over from a live daemon."),
    ] = False,
) -> None:
    """Run the daemon in the foreground (systemd runs it the same way)."""
    from edged.daemon import Daemon

    if log_format not in ("text", "json"):
        raise UsageError(f"--log-format must be text or json, not {log_format!r}")
    setup_logging(log_format, log_level)
    path = config_path(config)
    if path is None and not embedded:
        raise ConfigError(
            f"no config: give -c FILE, set $EDGED_CONFIG, create {DEFAULT_CONFIG_PATH}, "
            "or try --embedded"
        )
    cfg = load_config(path) if path is not None else demo_config()
    if not cfg.streams:
        raise ConfigError(f"{path}: no [[streams]] to consume")
    url = url or os.environ.get("EDGED_REDIS_URL")
    if embedded:
        from edged.embedded import embedded_server

        check_handlers(cfg)  # a bad handler exits 78 before the server starts
        with embedded_server() as embedded_url:
            code = anyio.run(Daemon.build(cfg, url or embedded_url, takeover).run)
    else:
        daemon = Daemon.build(cfg, url, takeover)  # handlers are imported here: a bad one exits 78
        code = anyio.run(daemon.run)
    raise typer.Exit(code)


# --------------------------------------------------------------------------- publish


def _read_stdin_lines() -> Iterator[tuple[int, str]]:
    for n, line in enumerate(sys.stdin, start=1):
        if line.strip():
            yield n, line


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


@app.command()
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
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add entries to a stream in edged's shape (body in the `payload` field)."""
    from edged.publish import publish as publish_entries

    fields = _parse_fields(field or [])
    try:
        timeout = Duration.parse(wait_timeout).seconds
    except ValueError as exc:
        raise UsageError(f"--wait-timeout: {exc}") from None
    if data is None:
        raise UsageError("give a JSON body, or - to read JSON lines from stdin")
    if data == "-":
        bodies = []
        for n, line in _read_stdin_lines():
            try:
                bodies.append(encode_json_text(line))
            except ValueError as exc:
                raise UsageError(f"stdin line {n}: {exc}; nothing was published") from None
    else:
        try:
            bodies = [encode_json_text(data)]
        except ValueError as exc:
            raise UsageError(f"{exc}; nothing was published") from None
    cfg, resolved_url = resolve_connection(config, url)

    async def go() -> list[str]:
        async with redis_client(cfg, resolved_url) as client:
            return await publish_entries(
                client, stream, bodies, fields=fields, maxlen=maxlen,
                wait_replicas=wait_replicas, wait_timeout=timeout,
            )

    ids = anyio.run(go)
    if as_json:
        typer.echo(msgspec.json.encode({"stream": stream, "ids": ids}).decode())
    else:
        for entry_id in ids:
            typer.echo(entry_id)


# --------------------------------------------------------------------------- config


@config_app.command("validate")
@exits
def config_validate(config: ConfigOpt = None) -> None:
    """Exit 0 if the config is usable (handlers importable), 78 with the reason if not."""
    path = config_path(config)
    if path is None:
        raise ConfigError(f"no config file: give -c FILE or create {DEFAULT_CONFIG_PATH}")
    cfg = load_config(path)
    check_handlers(cfg)
    typer.echo(f"{path}: ok, {len(cfg.streams)} stream(s)")


@config_app.command("show")
@exits
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective config with defaults filled in, as JSON; secrets are never shown."""
    path = config_path(config)
    cfg = load_config(path) if path is not None else Config()
    typer.echo(msgspec.json.format(msgspec.json.encode(cfg.redacted()), indent=2).decode())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    main()
