"""Turning Redis replies into Python values: the one place that decides how bytes become text.

Names, ids and metadata edged reads back are shown to people, so bytes that are not UTF-8 are
replaced, never raised on. Entry field names and values are not handled here: they stay bytes
until an ``Event`` is built (see consume/outcomes.py).
"""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    """``bytes`` → ``str`` (invalid UTF-8 replaced); anything else through ``str``."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def texts(values: Any) -> list[str]:
    """A reply list (``None`` counts as empty) as text."""
    return [text(v) for v in values or ()]


def int_or_none(value: Any) -> int | None:
    """An integer reply, or None for nil and anything that is not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def pairs(flat: Any) -> dict[str, str]:
    """A flat ``[k1, v1, k2, v2, ...]`` reply as a dict of text."""
    it = iter(texts(flat))
    return dict(zip(it, it, strict=False))
