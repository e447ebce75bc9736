"""``edged start``: run the daemon in the foreground, as systemd does."""

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from edged.cli.options import ConfigOpt, UrlOpt, check_url_override, config_path, exits
from edged.errors import ConfigError, UsageError

# The daemon, the config, anyio and redis are imported when a command here runs: start-up time
# (see edged/cli/__init__.py).
if TYPE_CHECKING:
    from edged.config import Config

log = logging.getLogger("edged.embedded")


def preflight(cfg: "Config", source: str, url: str | None = None, url_from: str = "--url") -> None:
    """Everything start-up would trip over, checked before any connection (by ``start`` and by
    ``config validate`` alike): a bad value raises ConfigError (exit 78) naming ``source`` (the
    config file) and the field, or ``url_from`` for the URL override; never a secret."""
    from edged.config import check_consumer_name, config_error
    from edged.connect.auth import check_credentials

    if not cfg.streams and cfg.outbox is None:  # an outbox alone: a host that only produces
        raise config_error(source, "$.streams", "no [[streams]] to consume (and no [outbox])")
    if url:
        check_url_override(url, url_from)
    problem = check_consumer_name(cfg.daemon.consumer_name())
    if problem:
        raise config_error(source, "$.daemon.consumer", problem)
    check_credentials(cfg.redis, source)
    check_handlers(cfg, source)


def check_handlers(cfg: "Config", source: str = "<config>") -> None:
    """Import every handler of the config, and find every exec handler's program: a bad one
    raises ConfigError (exit 78)."""
    from edged.config import ExecHandler
    from edged.handlers import build_handler, use_handler_path

    use_handler_path(cfg.daemon.handler_path)
    for i, s in enumerate(cfg.streams):
        if isinstance(s.handler, ExecHandler):
            _check_program(s.handler.exec[0], source, f"$.streams[{i}].handler.exec[0]")
        build_handler(s, i, source)


def _check_program(program: str, source: str, where: str) -> None:
    from edged.config import config_error

    found = program if "/" in program else shutil.which(program)
    if found is None:
        raise config_error(source, where, f"program {program!r} is not found in $PATH")
    if not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise config_error(source, where, f"program {found!r} is not an executable file")


def url_override(url: str | None) -> tuple[str | None, str]:
    """The URL overriding the config's (``--url``, else ``$EDGED_REDIS_URL``) and where it is from."""
    if url:
        return url, "--url"
    return os.environ.get("EDGED_REDIS_URL") or None, "$EDGED_REDIS_URL"


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
    cluster: Annotated[
        bool,
        typer.Option("--cluster", help="With --embedded: a local cluster of three primaries "
                                       "instead of one server, to try sharding."),
    ] = False,
    replicas: Annotated[
        int | None,
        typer.Option("--replicas", help="With --embedded --cluster: replicas per primary "
                                        "[default: 0].", min=0, max=2, show_default=False),
    ] = None,
) -> None:
    """Run the daemon in the foreground (systemd runs it the same way)."""
    import anyio

    from edged.config import DEFAULT_CONFIG_PATH, demo_config, load_config
    from edged.daemon.run import Daemon
    from edged.logs import setup_logging

    if log_format not in ("text", "json"):
        raise UsageError(f"--log-format must be text or json, not {log_format!r}")
    check_cluster_options(embedded, cluster, replicas, url)
    setup_logging(log_format, log_level)
    if cluster:
        start_embedded_cluster(config_path(config), replicas or 0, takeover)
    path = config_path(config)
    if path is None and not embedded:
        raise ConfigError(
            f"no config: give -c FILE, set $EDGED_CONFIG, create {DEFAULT_CONFIG_PATH}, "
            "or try --embedded"
        )
    cfg = load_config(path) if path is not None else demo_config()
    url, url_from = url_override(url)
    # Everything that could fail at start-up exits 78 here, before a server or Redis is touched.
    preflight(cfg, str(path) if path is not None else "<demo config>", url, url_from)
    if embedded:
        from edged.embedded import embedded_server

        with embedded_server() as embedded_url:
            code = anyio.run(Daemon(cfg, url or embedded_url, takeover).run)
    else:
        code = anyio.run(Daemon(cfg, url, takeover).run)
    raise typer.Exit(code)


def check_cluster_options(embedded: bool, cluster: bool, replicas: int | None,
                          url: str | None) -> None:
    """``--cluster`` goes with ``--embedded``, ``--replicas`` with ``--cluster``, and neither
    with ``--url``: a usage error (exit 2) otherwise."""
    if cluster and not embedded:
        raise UsageError("--cluster starts the embedded cluster: give it with --embedded "
                         "(edged start --embedded --cluster); for a cluster of your own, "
                         "put [redis.cluster] nodes in the config")
    if replicas is not None and not cluster:
        raise UsageError("--replicas is for the embedded cluster: edged start --embedded "
                         "--cluster --replicas N")
    if cluster and url:
        raise UsageError("--url cannot be given with --embedded --cluster: the daemon runs "
                         "on the embedded cluster")


def start_embedded_cluster(path: Path | None, replicas: int, takeover: bool) -> NoReturn:
    """``edged start --embedded --cluster [-c FILE]``: the demo, or the file's streams, on the
    embedded cluster; its [redis] gives way to the cluster's seeds."""
    import anyio

    from edged.config import load_config
    from edged.daemon.run import Daemon
    from edged.embedded_cluster import (
        PLACEHOLDER_SEEDS,
        demo_cluster_config,
        embedded_cluster,
        on_cluster,
        publish_hint,
        write_cluster_config,
    )

    source = str(path) if path is not None else "<demo config>"
    loaded = load_config(path) if path is not None else None

    def config_for(seeds: list[str]) -> "Config":
        if loaded is None:
            return demo_cluster_config(seeds)
        return on_cluster(loaded, seeds, source)

    if os.environ.get("EDGED_REDIS_URL"):
        log.warning("$EDGED_REDIS_URL is ignored: the daemon runs on the embedded cluster")
    # Everything that could fail at start-up exits 78 here, before a server is started.
    preflight(config_for(PLACEHOLDER_SEEDS), source)
    with embedded_cluster(replicas) as seeds:
        cfg = config_for(seeds)
        written = write_cluster_config(cfg)
        if path is not None:
            log.info("%s: its [redis] connection is replaced by the embedded cluster's seed "
                     "nodes", path)
        log.info("embedded cluster seed nodes: %s", " ".join(seeds))
        log.info("other commands reach it with -c %s, e.g.: %s", written,
                 publish_hint(cfg, written))
        code = anyio.run(Daemon(cfg, None, takeover).run)
    raise typer.Exit(code)
