"""Entry bodies: the ``payload`` field, JSON by default, msgpack or raw bytes per stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

_json_decode = msgspec.json.decode
_msgpack_decode = msgspec.msgpack.decode


def _raw(data: bytes) -> bytes:
    return data


def decoder(codec: str) -> Callable[[bytes], Any]:
    """The function that turns a payload's bytes into the value handlers see."""
    if codec == "json":
        return _json_decode
    if codec == "msgpack":
        return _msgpack_decode
    return _raw


def encode_json_text(text: str) -> bytes:
    """Check that ``text`` is one JSON document and return it compactly encoded."""
    try:
        value = msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    return msgspec.json.encode(value)
