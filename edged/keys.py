"""Names of the Redis keys edged itself writes. Everything lives under one prefix."""

from __future__ import annotations


def daemon_key(prefix: str, consumer: str) -> str:
    """The heartbeat record of one live daemon (a hash with a TTL)."""
    return f"{prefix}daemon:{consumer}"


def daemons_pattern(prefix: str) -> str:
    return f"{prefix}daemon:*"
