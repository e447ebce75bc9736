"""The command line's help: -h and --help everywhere, --version, words in brackets kept, one
example per command, commands in the order an operator needs them (issue: "Help")."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from edged import __version__
from edged.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}


def _commands() -> list[list[str]]:
    """The argv of every command and subcommand."""
    root: Any = typer.main.get_command(app)
    found = []
    for name, command in root.commands.items():
        if hasattr(command, "commands"):  # a group (typer has its own copy of click's classes)
            found += [[name, sub] for sub in command.commands]
        else:
            found.append([name])
    return found


def _help(*argv: str) -> str:
    result = runner.invoke(app, [*argv], env=WIDE)
    assert result.exit_code == 0, (argv, result.output)
    return result.output


def test_every_command_answers_h_and_help_alike_with_an_example() -> None:
    commands = _commands()
    assert len(commands) >= 17
    for argv in commands:
        short, long = _help(*argv, "-h"), _help(*argv, "--help")
        assert short == long, argv
        assert re.search(r"Example: .*\bedged " + re.escape(argv[0]), short), (argv, short)


def test_version() -> None:
    assert _help("--version").strip() == f"edged {__version__}"
    assert _help("-V").strip() == f"edged {__version__}"


@pytest.mark.parametrize(("argv", "kept"), [
    (["check"], "[daemon] listen"),
    (["-h"], "[daemon] listen"),
    (["publish"], "[outbox] socket"),
])
def test_words_in_brackets_are_not_taken_for_markup(argv: list[str], kept: str) -> None:
    text = _help(*argv) if argv[-1] == "-h" else _help(*argv, "-h")
    assert kept in " ".join(text.split()), text


def test_commands_come_in_the_order_an_operator_needs_them() -> None:
    text = _help("-h")
    order = [text.index(f" {name} ") for name in
             ("start", "check", "config", "status", "groups", "pending", "publish", "dlq")]
    assert order == sorted(order), text
