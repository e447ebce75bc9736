"""``edged config validate|show|reference``: check, print and document the configuration."""

import typer

from edged.cli.options import ConfigOpt, config_path, exits
from edged.cli.start import preflight, url_override
from edged.errors import ConfigError

config_app = typer.Typer(help="Check, print or document the configuration.", no_args_is_help=True,
                         rich_markup_mode="markdown")


@config_app.command("validate", epilog="**Example:** `edged config validate -c edged.toml`")
@exits
def config_validate(config: ConfigOpt = None) -> None:
    """Exit 0 if `edged start` would accept the config (handlers importable, password and TLS
    files readable, $EDGED_REDIS_URL usable), 78 naming the file and the field if not."""
    # Here, not at the top: start-up time (see edged/cli/__init__.py).
    from edged.config import DEFAULT_CONFIG_PATH, load_config

    path = config_path(config)
    if path is None:
        raise ConfigError(f"no config file: give -c FILE or create {DEFAULT_CONFIG_PATH}")
    cfg = load_config(path)
    url, url_from = url_override(None)
    preflight(cfg, str(path), url, url_from)
    typer.echo(f"{path}: ok, {len(cfg.streams)} stream(s)")


@config_app.command("show", epilog="**Example:** `edged config show -c /etc/edged/edged.toml`")
@exits
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective config with defaults filled in, as JSON; secrets are never shown."""
    import msgspec  # here, with the config: start-up time (see edged/cli/__init__.py)

    from edged.config import Config, load_config

    path = config_path(config)
    cfg = load_config(path) if path is not None else Config()
    typer.echo(msgspec.json.format(msgspec.json.encode(cfg.redacted()), indent=2).decode())


@config_app.command("reference", epilog="**Example:** `edged config reference > reference.md`")
def config_reference() -> None:
    """Print the configuration reference (Markdown), generated from the config's own docs."""
    from edged.config_reference import render_markdown

    typer.echo(render_markdown(), nl=False)
