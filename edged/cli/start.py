"""``edged start``: run the daemon in the foreground, as systemd does."""

from __future__ import annotations

import os
from typing import Annotated

import anyio
import typer

from edged.cli.options import ConfigOpt, UrlOpt, config_path, exits
from edged.config import DEFAULT_CONFIG_PATH, Config, demo_config, load_config
from edged.errors import ConfigError, UsageError
from edged.handlers import build_handler
from edged.logs import setup_logging


def check_handlers(cfg: Config) -> None:
    """Import every handler of the config: a bad one raises ConfigError (exit 78)."""
    for i, s in enumerate(cfg.streams):
        build_handler(s, i)


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
    from edged.daemon.run import Daemon

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
            code = anyio.run(Daemon(cfg, url or embedded_url, takeover).run)
    else:
        daemon = Daemon(cfg, url, takeover)  # handlers are imported here: a bad one exits 78
        code = anyio.run(daemon.run)
    raise typer.Exit(code)
