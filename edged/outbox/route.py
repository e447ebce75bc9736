"""``POST /v1/publish/<stream>``: NDJSON in, entries into the outbox, 202 out.

The body holds one JSON payload per line (blank lines are skipped). The query may give
``key=K`` (the shard of a sharded stream, as ``edged publish --key``) and ``field=name=value``
(repeatable) for metadata fields. A request is taken whole or not at all:

- 202 ``{"accepted": n, "ids": [...]}`` once every entry is on disk (``shards`` too when the
  stream is sharded: the shard of each entry);
- 400 naming the line or parameter that is wrong; nothing is written;
- 507 when the outbox is full (or its disk is), 503 while the daemon is not taking publishes:
  ``{"error": "..."}``; the producer keeps its entries and tries again.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

import msgspec

from edged.codec import encode_json_text
from edged.keys import MSGID_FIELD, PAYLOAD_FIELD
from edged.outbox.service import Outbox, OutboxClosed, OutboxWriteFailed
from edged.outbox.store import OutboxFull

PREFIX = b"/v1/publish/"
MAX_ENTRIES = 100_000  # per request: parsing more at once would hold up the event loop
JSON = "application/json"
RESERVED = (PAYLOAD_FIELD, MSGID_FIELD)


class BadPublish(ValueError):
    """The request cannot be taken; the message says which part is wrong."""


def parse_target(path: bytes, query: bytes) -> tuple[str, str | None, dict[str, bytes]]:
    """(stream, key, fields) of a publish request."""
    stream = unquote(path[len(PREFIX):].decode("utf-8", "strict"), errors="strict")
    if not stream or "/" in stream:
        raise BadPublish("give the stream in the path: POST /v1/publish/<stream>")
    key: str | None = None
    fields: dict[str, bytes] = {}
    try:
        pairs = parse_qsl(query.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(query),
                          errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPublish(f"query: {exc}") from None
    for name, value in pairs:
        if name == "key":
            key = value
        elif name == "field":
            field_name, sep, field_value = value.partition("=")
            if not sep or not field_name:
                raise BadPublish(f"field={value!r}: write it as field=name=value")
            if field_name in RESERVED:
                raise BadPublish(f"field {field_name!r} is set by edged, not by the producer")
            fields[field_name] = field_value.encode()
        else:
            raise BadPublish(f"unknown query parameter {name!r} (key and field are known)")
    return stream, key, fields


def parse_lines(body: bytes) -> list[bytes]:
    """The JSON payloads of an NDJSON body, compactly encoded; BadPublish names a bad line."""
    if body.count(b"\n") > MAX_ENTRIES:
        raise BadPublish(f"at most {MAX_ENTRIES} lines per request; send more in several; "
                         "nothing was accepted")
    payloads = []
    for n, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            payloads.append(encode_json_text(line.decode("utf-8")))
        except UnicodeDecodeError:
            raise BadPublish(f"line {n}: not UTF-8; nothing was accepted") from None
        except ValueError as exc:
            raise BadPublish(f"line {n}: {exc}; nothing was accepted") from None
    if not payloads:
        raise BadPublish("the body holds no entry: send one JSON payload per line")
    return payloads


def _json(status: int, value: object) -> tuple[int, str, bytes]:
    return status, JSON, msgspec.json.encode(value) + b"\n"


async def publish_request(outbox: Outbox, path: bytes, query: bytes,
                          body: bytes) -> tuple[int, str, bytes]:
    """(status, content type, body) answering one publish request."""
    try:
        stream, key, fields = parse_target(path, query)
        payloads = parse_lines(body)
    except (BadPublish, UnicodeDecodeError) as exc:
        return _json(400, {"error": str(exc)})
    try:
        accepted = await outbox.accept(stream, payloads, fields, key)
    except OutboxFull as exc:
        return _json(507, {"error": f"outbox full, nothing accepted: {exc}"})
    except OutboxWriteFailed as exc:
        return _json(507, {"error": f"{exc}; nothing accepted"})
    except OutboxClosed as exc:
        return _json(503, {"error": f"{exc}; nothing accepted"})
    answer: dict[str, object] = {"accepted": len(accepted.ids), "ids": accepted.ids}
    if any(s != stream for s in accepted.streams):
        answer["shards"] = accepted.streams
    return _json(202, answer)
