"""How CLI commands print: a rich table for people, JSON for programs. One renderer for all."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import msgspec
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text


def print_table(table: Table) -> None:
    # Piped output is for grep and awk: one row per line, never folded to 80 columns, and
    # without the padding rich puts after the last column.
    console = Console(width=None if sys.stdout.isatty() else 100_000, highlight=False)
    with console.capture() as captured:
        console.print(table)
    typer.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def print_json(value: object) -> None:
    typer.echo(msgspec.json.encode(value).decode())


def age(seconds: float | None) -> str:
    """``3725`` → ``1h2m``; ``None`` → ``-``."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            rest = (s % size) // sub_size
            return f"{s // size}{unit}{rest}{sub}" if rest else f"{s // size}{unit}"
    return f"{s}s"


def cell(value: object) -> Text:
    # Text, not str: rich would read "[...]" in a reason or payload as markup.
    return Text("-" if value is None else str(value))


def make_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    out = Table(box=None, pad_edge=False, show_edge=False)
    for header in headers:
        out.add_column(header, overflow="fold")
    for row in rows:
        out.add_row(*(cell(v) for v in row))
    return out
