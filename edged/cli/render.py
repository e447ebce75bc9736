"""How CLI commands print: a rich table for people, JSON for programs. One renderer for all.

rich and msgspec are imported where a table or JSON is made, not at the top: start-up time
(see edged/cli/__init__.py).
"""

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

# --wide is kept here by its option's callback, for the one command this process runs.
_wide: list[bool] = [False]


def _keep_wide(value: bool) -> bool:
    _wide[0] = value
    return value


WideOpt = Annotated[bool, typer.Option(
    "--wide", "-w", callback=_keep_wide,
    help="Every column in full, however wide (on a terminal, columns that do not fit are "
    "otherwise left out, and free text shortened with an ellipsis; piped output is always "
    "whole).")]

GAP = 2  # spaces between two columns (box=None, padding (0, 1), no edge padding)
SHORTENED = 24  # free text keeps at least this much before more columns are left out


@dataclass
class Layout:
    """What a table holds, kept so that it can be laid out again for a narrow terminal."""

    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    drop: tuple[str, ...]
    """Headers to leave out first when the terminal is too narrow, in that order; after them,
    columns go from the right. The first column always stays."""
    shorten: tuple[str, ...]
    """Free-text columns that may be cut with an ellipsis rather than left out."""
    wrap: tuple[str, ...] = ()
    """Columns whose text is read in full (a dead letter's fields): wrapped over lines."""


def print_table(table: "Table") -> None:
    """Piped: one row per line, never folded, for grep and awk. On a terminal: cells are never
    wrapped (an id or a name stays whole); columns that do not fit are left out, by priority,
    with a note naming them; --wide shows all of them."""
    from rich.console import Console

    layout: Layout | None = getattr(table, "edged_layout", None)
    width = _terminal_width()
    hidden: list[str] = []
    if width is not None and layout is not None and not _wide[0]:
        table, hidden = _fit(layout, width)
    console = Console(width=width if width is not None and not _wide[0] else 100_000,
                      highlight=False)
    with console.capture() as captured:
        console.print(table)
    typer.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))
    if hidden:
        typer.echo(f"(not shown at {width} columns: {', '.join(hidden)}; --wide shows them)")


def _terminal_width() -> int | None:
    """The terminal's width; None when stdout is not a terminal."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((80, 24)).columns


def _fit(layout: Layout, width: int) -> "tuple[Table, list[str]]":
    """The table with as many columns as fit in ``width``; and the headers left out."""
    widths = {h: 8 if h in layout.wrap else max([len(h), *(len(r[i]) for r in layout.rows)])
              for i, h in enumerate(layout.headers)}
    order = [h for h in layout.drop if h in widths]
    order += [h for h in reversed(layout.headers[1:]) if h not in order]
    shown = list(layout.headers)

    def total(shortened: bool = False) -> int:
        cut = SHORTENED if shortened else 10**9  # free text cut, with an ellipsis
        return (sum(min(widths[h], cut) if h in layout.shorten else widths[h] for h in shown)
                + GAP * (len(shown) - 1))

    hidden: list[str] = []
    for header in order:
        if total(shortened=True) <= width:
            break  # what is left fits, cutting free text with an ellipsis
        shown.remove(header)
        hidden.append(header)
    keep = [layout.headers.index(h) for h in shown]
    cut = [h for h in shown if h in layout.shorten]
    if cut and total() > width:  # the free text gets what the whole columns leave
        room = width - total() + sum(widths[h] for h in cut)
        for h in cut:
            widths[h] = max(SHORTENED, room // len(cut))
    table = _build(shown, [tuple(r[i] for i in keep) for r in layout.rows], layout.shorten,
                   layout.wrap, widths)
    return table, hidden


def print_json(value: object) -> None:
    import msgspec

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


def cell(value: object) -> "Text":
    from rich.text import Text

    # Text, not str: rich would read "[...]" in a reason or payload as markup.
    return Text("-" if value is None else str(value))


def make_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
               drop: Sequence[str] = (), shorten: Sequence[str] = (),
               wrap: Sequence[str] = ()) -> "Table":
    """A table of ``rows``; ``drop``, ``shorten`` and ``wrap`` say how it narrows on a
    terminal (see Layout)."""
    text_rows = [tuple("-" if v is None else str(v) for v in row) for row in rows]
    table = _build(list(headers), text_rows, tuple(shorten), tuple(wrap))
    table.edged_layout = Layout(  # type: ignore[attr-defined]
        tuple(headers), text_rows, tuple(drop), tuple(shorten), tuple(wrap))
    return table


def _build(headers: Sequence[str], rows: Sequence[Sequence[str]],
           shorten: Sequence[str] = (), wrap: Sequence[str] = (),
           widths: dict[str, int] | None = None) -> "Table":
    """``widths`` (a table fitted to a terminal): what each column needs whole; only free
    text may get less."""
    from rich.table import Table

    out = Table(box=None, pad_edge=False, show_edge=False)
    for header in headers:
        if header in wrap:
            out.add_column(header, overflow="fold")
        elif header in shorten:
            out.add_column(header, no_wrap=True, overflow="ellipsis",
                           max_width=(widths or {}).get(header))
        else:  # never cut or folded: an id or a name broken over lines cannot be copied
            need = (widths or {}).get(header, len(header))
            out.add_column(header, no_wrap=True, overflow="ignore", min_width=need)
    for row in rows:
        out.add_row(*(cell(v) for v in row))
    return out
