"""One short line for why a connection failed: refused, timed out, certificate, auth.

redis-py's messages for these hold the client object's repr (kilobytes, with every connection
option) or only the outermost wrapper; an operator needs the cause, said the same way for the
primary and the sentinels.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_DETAIL = 160


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def cause(exc: BaseException) -> str:
    """Why ``exc`` happened, in a few words; never a repr of a client or a connection."""
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            return f"certificate not accepted ({link.verify_message or link.reason})"
        if isinstance(link, ssl.SSLError):
            return f"TLS failed ({link.reason or link})"
        if isinstance(link, AuthenticationError | NoPermissionError):
            return f"refused the user ({_first_line(link)})"
        if isinstance(link, RedisTimeoutError | TimeoutError):
            return "timed out"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
    text = _first_line(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "certificate not accepted"
    return text


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"
