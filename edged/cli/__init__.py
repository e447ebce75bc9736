"""The ``edged`` command: thin commands over library code, errors turned into exit codes.

One module per noun; every command is registered here, in the order ``edged --help`` shows
them, under its help panel.
"""

from __future__ import annotations

import sys

import typer

from edged.cli import check, inspect, operate, publish, start, trim
from edged.cli.config import config_app
from edged.cli.dlq import dlq_app
from edged.errors import EXIT_FAILURE

DAEMON = "Daemon"
INSPECTION = "Inspection"
OPERATOR = "Operator actions"
DEAD_LETTERS = "Dead letters"

app = typer.Typer(
    name="edged",
    help="Redis Streams edge daemon: consume, reclaim, dead-letter, inspect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(rich_help_panel=DAEMON)(start.start)
app.command(rich_help_panel=DAEMON)(check.check)
app.add_typer(config_app, name="config", rich_help_panel=DAEMON)
app.command(rich_help_panel=INSPECTION)(inspect.status)
app.command(rich_help_panel=INSPECTION)(inspect.groups)
app.command(rich_help_panel=INSPECTION)(inspect.pending)
app.command(rich_help_panel=INSPECTION)(inspect.consumers)
app.command(rich_help_panel=OPERATOR)(publish.publish)
app.command(rich_help_panel=OPERATOR)(operate.claim)
app.command(rich_help_panel=OPERATOR)(operate.ack)
app.command(rich_help_panel=OPERATOR)(trim.trim)
app.add_typer(dlq_app, name="dlq", rich_help_panel=DEAD_LETTERS)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_FAILURE)
