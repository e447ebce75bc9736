"""Plain-text tables: left-aligned text, right-aligned figures, a failure after its short row."""

from __future__ import annotations

from collections.abc import Sequence


def render(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: set[int],
    trailers: dict[int, str] | None = None,
) -> list[str]:
    """The lines of the table; ``trailers[i]`` is appended to row ``i`` (a failed run's reason)."""
    trailers = trailers or {}
    widths = [max(len(h), *(len(row[c]) for row in rows if c < len(row))) for c, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    lines = [line(head), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(rows):
        text = line(row)
        lines.append(f"{text}  {trailers[i]}" if i in trailers else text)
    return lines


def num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def ratio(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"
