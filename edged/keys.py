"""Names of the Redis keys edged itself writes. Everything lives under one prefix."""

from __future__ import annotations


def daemon_key(prefix: str, consumer: str) -> str:
    """The heartbeat record of one live daemon (a hash with a TTL of a few beats)."""
    return f"{prefix}daemon:{consumer}"


def daemons_pattern(prefix: str) -> str:
    return f"{prefix}daemon:*"


def seen_key(prefix: str) -> str:
    """Hash consumer -> last heartbeat (ms): how long a consumer has been dead, after its
    record expired. Read by the dead-consumer cleanup and the inspection commands."""
    return f"{prefix}seen"
