"""The ``edged`` command: thin commands over library code, errors turned into exit codes.

One module per noun; every command is registered here, in the order ``edged --help`` shows
them, under its help panel.

Start-up time: whichever command runs, typer imports every module here and reads every
command's signature. So these modules import at the top only typer and edged's light leaves
(errors, durations, keys, sharding); redis, anyio, msgspec, rich, the config and the library
are imported inside the functions that use them (tests/test_cli_startup.py fails if one comes
back to the top). And they do without ``from __future__ import annotations``: typer evaluates
each command's annotations several times while it builds the command line, which strings made
twice as slow; an annotation naming a type imported only for type checking is quoted instead.
"""

import sys
from typing import Literal

import typer

from edged import __version__
from edged.cli import check, inspect, operate, pause, publish, start, trim
from edged.cli.config import config_app
from edged.cli.dlq import dlq_app
from edged.cli.embedded import embedded_app
from edged.cli.manage import consumer_app, group_app
from edged.errors import EXIT_FAILURE

DAEMON = "Daemon"
INSPECTION = "Inspection"
OPERATOR = "Operator actions"
DEAD_LETTERS = "Dead letters"

# Help text is markdown: paragraphs of a docstring flow together, and words in brackets
# (`[daemon] listen`) stay, where rich markup took them for style tags and dropped them.
MARKUP: Literal["markdown"] = "markdown"
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="edged",
    help="Redis Streams edge daemon: consume, reclaim, dead-letter, inspect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=MARKUP,
    context_settings=HELP_OPTIONS,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"edged {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", "-V", callback=_show_version,
                                 is_eager=True, help="Print the version and exit."),
) -> None:
    """Redis Streams edge daemon: consume, reclaim, dead-letter, inspect."""

# One example per command, shown under its --help.
EXAMPLES = {
    "start": "edged start -c /etc/edged/edged.toml",
    "check": "edged check -c /etc/edged/edged.toml && echo ready",
    "status": "edged status -c /etc/edged/edged.toml",
    "groups": "edged groups edge:config --check",
    "pending": "edged pending edge:config --detail --idle 10m",
    "consumers": "edged consumers edge:config -g edged",
    "publish": "echo '{\"t\": 21.5}' | edged publish telemetry - --key sensor-4",
    "claim": "edged claim edge:config 1700000000000-0 --to host-b",
    "ack": "edged ack edge:config 1700000000000-0 --yes",
    "trim": "edged trim edge:config --dry-run",
    "pause": "edged pause edge:config --reason 'migrating the consumer'",
    "resume": "edged resume edge:config",
}


def _example(name: str) -> str:
    return f"**Example:** `{EXAMPLES[name]}`"


for panel, command in (
    (DAEMON, start.start), (DAEMON, check.check), (INSPECTION, inspect.status),
    (INSPECTION, inspect.groups), (INSPECTION, inspect.pending), (INSPECTION, inspect.consumers),
    (OPERATOR, publish.publish), (OPERATOR, operate.claim), (OPERATOR, operate.ack),
    (OPERATOR, trim.trim), (OPERATOR, pause.pause), (OPERATOR, pause.resume),
):
    app.command(rich_help_panel=panel, epilog=_example(command.__name__))(command)
app.add_typer(config_app, name="config", rich_help_panel=DAEMON)
app.add_typer(embedded_app, name="embedded", rich_help_panel=DAEMON)
app.add_typer(group_app, name="group", rich_help_panel=OPERATOR)
app.add_typer(consumer_app, name="consumer", rich_help_panel=OPERATOR)
app.add_typer(dlq_app, name="dlq", rich_help_panel=DEAD_LETTERS)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_FAILURE)
