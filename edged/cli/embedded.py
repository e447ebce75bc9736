"""``edged embedded status|stop|reset``: the embedded server of ``edged start --embedded``."""

import shutil
from typing import Annotated

import typer

from edged.cli.options import JsonOpt, exits
from edged.cli.render import print_json
from edged.errors import UsageError

# edged.embedded (which imports redis) and edged.state (msgspec) are imported in the commands:
# start-up time (see edged/cli/__init__.py).

embedded_app = typer.Typer(
    help="The embedded server of `edged start --embedded`: status, stop, reset.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@embedded_app.command("status", epilog="**Example:** `edged embedded status --json`")
@exits
def status(as_json: JsonOpt = False) -> None:
    """Whether the embedded server runs, where, and whether the daemon that started it still
    does (a server whose daemon is gone is stale: `edged embedded stop` ends it)."""
    from edged.embedded import data_dir, is_embedded_server
    from edged.state import load_record, pid_running, record_path

    record = load_record()
    running = (record is not None and pid_running(record.pid)
               and is_embedded_server(record.pid, record.url))
    owner_alive = record is not None and (not record.owner or pid_running(record.owner))
    state = ("not running" if not running else "running" if owner_alive
             else "running, STALE: the daemon that started it is gone")
    info = {
        "state": state,
        "url": record.url if record else None,
        "pid": record.pid if record else None,
        "owner": record.owner if record else None,
        "data": record.data if record and record.data else str(data_dir()),
        "record": str(record_path()),
    }
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        typer.echo(f"{key}: {'-' if value is None else value}")


@embedded_app.command("stop", epilog="**Example:** `edged embedded stop`")
@exits
def stop() -> None:
    """Stop the embedded server (SIGTERM: it writes its data first) and forget its record."""
    from edged.embedded import stop_server
    from edged.state import load_record

    record = load_record()
    if record is None or not stop_server(record):
        typer.echo("the embedded server is not running")
        return
    typer.echo(f"stopped the embedded server pid {record.pid} ({record.url})")


@embedded_app.command("reset", epilog="**Example:** `edged embedded reset --yes`")
@exits
def reset(
    yes: Annotated[bool, typer.Option("--yes", help="Really delete its data.")] = False,
) -> None:
    """Stop the embedded server and delete its data: every stream, group and pending entry
    in it is gone. Without --yes: exit 2."""
    from edged.embedded import data_dir, stop_server
    from edged.state import load_record

    if not yes:
        raise UsageError(f"reset deletes {data_dir()} (every stream and group in it): add --yes")
    record = load_record()
    if record is not None:
        stop_server(record)
    shutil.rmtree(data_dir(), ignore_errors=True)
    typer.echo(f"the embedded server is stopped and its data ({data_dir()}) deleted")
