"""Human byte sizes as written in the config: 1GiB, 512MiB, 64KiB, 1000000 (bytes)."""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_SIZE = re.compile(r"(\d+)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?")


class ByteSize:
    """A number of bytes; written like ``"1GiB"`` (binary) or ``"500MB"`` (decimal)."""

    __slots__ = ("bytes",)

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ValueError("a size cannot be negative")
        self.bytes = int(count)

    @classmethod
    def parse(cls, text: str | int) -> ByteSize:
        if isinstance(text, int) and not isinstance(text, bool):
            return cls(text)
        match = _SIZE.fullmatch(str(text).strip())
        if match is None:
            raise ValueError(f"invalid size {text!r}: write a number and a unit, like 1GiB, "
                             "512MiB or 100MB")
        return cls(int(match.group(1)) * _UNITS[match.group(2) or ""])

    def __str__(self) -> str:
        for unit in ("TiB", "GiB", "MiB", "KiB"):
            if self.bytes and self.bytes % _UNITS[unit] == 0:
                return f"{self.bytes // _UNITS[unit]}{unit}"
        return f"{self.bytes}B"

    def __repr__(self) -> str:
        return f"ByteSize({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteSize) and other.bytes == self.bytes

    def __hash__(self) -> int:
        return hash(self.bytes)
