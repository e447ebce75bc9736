"""Human durations as written in the config and on the command line: 500ms, 30s, 5m, 1h30m."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


class Duration:
    """A non-negative span of time, kept in seconds; written like ``"30s"`` or ``"1m30s"``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        self.seconds = float(seconds)

    @classmethod
    def parse(cls, text: str) -> Duration:
        text = text.strip()
        if not _WHOLE.fullmatch(text):
            raise ValueError(
                f"invalid duration {text!r}: write a number and a unit, like 500ms, 30s, 5m, 1h"
            )
        return cls(sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))

    @property
    def ms(self) -> int:
        return round(self.seconds * 1000)

    def __str__(self) -> str:
        ms = self.ms
        if ms % 3_600_000 == 0 and ms:
            return f"{ms // 3_600_000}h"
        if ms % 60_000 == 0 and ms:
            return f"{ms // 60_000}m"
        if ms % 1000 == 0:
            return f"{ms // 1000}s"
        return f"{ms}ms"

    def __repr__(self) -> str:
        return f"Duration({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)
