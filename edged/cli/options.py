"""What every CLI command shares: connection options, config lookup, errors to exit codes.

What a command needs (redis, anyio, msgspec, the config) is imported in the function that uses
it: start-up time (see edged/cli/__init__.py).
"""

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from edged.errors import AccessDenied, ConfigError, EdgedError, RedisUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from edged.config import Config

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c",
        help="Config file [default: $EDGED_CONFIG, then /etc/edged/edged.toml].",
        show_default=False,
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", help="Redis URL overriding the config [env: EDGED_REDIS_URL]. "
        "Put no password here: argv is visible to every user; use password-file.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

# --timeout is read where the client is made (redis_client), not by each command: the option's
# callback keeps it here for the one command this process runs.
_timeout: list[float | None] = [None]


def _keep_timeout(value: float | None) -> float | None:
    _timeout[0] = value
    return value


TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", min=0.1, callback=_keep_timeout, show_default=False,
    help="Seconds to wait for Redis to take the connection and to answer each command "
    "[default: the config's connect-timeout, 5s]: a server that takes connections and never "
    "answers is reported after it (exit 69).")]
StreamArg = Annotated[str, typer.Argument(help="The stream.")]
GroupOpt = Annotated[str, typer.Option("--group", "-g", help="Consumer group.")]
IdsArg = Annotated[list[str], typer.Argument(help="Entry ids (like 1712345678901-0).")]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def exits(fn: F) -> F:
    """Turn edged's domain errors into one line on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgedError as exc:
            typer.echo(f"edged: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def config_path(explicit: Path | None) -> Path | None:
    from edged.config import DEFAULT_CONFIG_PATH  # not at the top: start-up time

    if explicit is not None:
        return explicit
    env = os.environ.get("EDGED_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def resolve_connection(config: Path | None, url: str | None) -> "tuple[Config, str | None]":
    """The config to use and the URL override: --url, $EDGED_REDIS_URL, else the embedded
    server's URL, else the embedded cluster's config."""
    from edged.config import Config, load_config
    from edged.state import read_cluster_record, read_record

    path = config_path(config)
    cfg = load_config(path) if path is not None else Config()
    if url:
        check_url_override(url, "--url")
    else:
        url = os.environ.get("EDGED_REDIS_URL")
        if url:
            check_url_override(url, "$EDGED_REDIS_URL")
    # Without a server of its own (no -c, or a config naming no Redis), a command finds the
    # embedded server the way `edged start --embedded -c` put it under that config.
    names_no_server = (cfg.redis.url is None and cfg.redis.sentinel is None
                       and cfg.redis.cluster is None)
    if url is None and (path is None or names_no_server):
        record = read_record()
        if record is not None:
            url = record.url
        elif path is None and (cluster := read_cluster_record()) is not None:
            # `edged start --embedded --cluster` runs: its config has the seeds and the
            # streams it serves (so `publish` knows a demo stream's shards too).
            cfg = load_config(cluster.config)
    return cfg, url


def check_url_override(url: str, url_from: str) -> None:
    """The Redis URL from ``--url`` or ``$EDGED_REDIS_URL`` (named by ``url_from``) is usable."""
    from edged.config import check_redis_url

    try:
        check_redis_url(url)
    except ValueError as exc:  # the message never holds the URL: it may hold a password
        raise ConfigError(f"{url_from}: {exc}") from None


@asynccontextmanager
async def redis_client(cfg: "Config", url: str | None) -> "AsyncIterator[Redis]":
    """A client for one command; Redis errors become one clear line and the right exit code."""
    import msgspec
    from redis.exceptions import RedisError

    from edged.connect.client import describe_target, describe_user, make_client
    from edged.connect.transient import AUTH_ERRORS, TRANSIENT_ERRORS
    from edged.durations import Duration

    timeout = _timeout[0] or cfg.redis.connect_timeout.seconds
    redis_cfg = msgspec.structs.replace(cfg.redis, connect_timeout=Duration(timeout))
    client = make_client(redis_cfg, url=url, socket_timeout=timeout)
    try:
        yield client
    except BrokenPipeError:  # our stdout, not Redis (redis-py wraps its own socket errors):
        raise  # the reader went away (`| head`); main() ends quietly
    except AUTH_ERRORS as exc:  # before TRANSIENT_ERRORS: a wrong password is no outage
        raise AccessDenied(
            f"Redis at {describe_target(cfg.redis, url)} refused user "
            f"{describe_user(cfg.redis, url)}: {exc} (check [redis] username and "
            "password-file, and the user's ACL)") from None
    except TRANSIENT_ERRORS as exc:
        raise RedisUnavailable(f"Redis at {describe_target(cfg.redis, url)} unavailable: {exc}") from None
    except RedisError as exc:  # WRONGTYPE, NOPERM, READONLY, OOM...
        raise EdgedError(f"Redis refused: {exc}") from None
    finally:
        await client.aclose()


def run_once(config: Path | None, url: str | None,
             action: "Callable[[Redis, Config], Awaitable[T]]") -> T:
    """Resolve the connection, then run ``action`` on one client; Redis errors → exit codes."""
    import anyio

    cfg, resolved_url = resolve_connection(config, url)

    async def go() -> T:
        async with redis_client(cfg, resolved_url) as client:
            return await action(client, cfg)

    return anyio.run(go)
