"""Every Redis key and entry field name that edged writes, in one place.

The Lua scripts take these names as arguments (none is spelled inside a script), and the CLI
and the tests import them from here, so a name changes in one place or not at all.
"""

from __future__ import annotations

DEFAULT_PREFIX = "edged:"
"""``[daemon] key-prefix``: every key of edged's own lives under it."""

# --------------------------------------------------------------------------- keys


def daemon_key(prefix: str, consumer: str) -> str:
    """The heartbeat record of one live daemon (a hash with a TTL of a few beats)."""
    return f"{prefix}daemon:{consumer}"


def daemons_pattern(prefix: str) -> str:
    """SCAN pattern matching every daemon's heartbeat record."""
    return f"{prefix}daemon:*"


def paused_key(prefix: str) -> str:
    """Hash "stream/group" -> who paused it, when and why (JSON): `edged pause`. Every daemon
    reading that stream and group stops reading it while the field exists."""
    return f"{prefix}paused"


def seen_key(prefix: str) -> str:
    """Hash consumer -> last heartbeat (ms): how long a consumer has been dead, after its
    record expired. Read by the dead-consumer cleanup and the inspection commands."""
    return f"{prefix}seen"


def trim_lease_key(prefix: str, stream: str) -> str:
    """The lease (SET NX PX, value the consumer name) of the one daemon that trims ``stream``."""
    return f"{prefix}trim:{stream}"


def default_dead_letter(stream: str) -> str:
    """The dead-letter stream of ``stream`` when the config names none."""
    return f"{stream}:dead"


# --------------------------------------------------------------------------- entry fields

PAYLOAD_FIELD = "payload"
"""The field that carries an entry's body; every other field is metadata."""

MSGID_FIELD = "edged-msgid"
"""The message id of an entry published through a daemon's outbox (a ULID): the same in every
copy a crash made, so that consumers can drop duplicates by it (Event.msgid)."""

DEAD_REASON = "edged-reason"
DEAD_STREAM = "edged-stream"
DEAD_GROUP = "edged-group"
DEAD_ID = "edged-id"
DEAD_CONSUMER = "edged-consumer"
DEAD_FAILED_AT = "edged-failed-at"
DEAD_DELIVERIES = "edged-deliveries"
"""Written by lua/dead_letter.lua from Redis's own delivery count."""
DEAD_METADATA_FIELDS = (DEAD_REASON, DEAD_STREAM, DEAD_GROUP, DEAD_ID, DEAD_CONSUMER,
                        DEAD_FAILED_AT, DEAD_DELIVERIES)
"""The fields edged adds when it dead-letters; everything else is the original entry's."""

# --------------------------------------------------------------------------- heartbeat record

HB_CONSUMER = "consumer"
HB_HOST = "host"
HB_PID = "pid"
HB_VERSION = "version"
HB_STREAMS = "streams"
"""JSON list of ``"stream/group"``."""
HB_CLAIM = "claim"
"""JSON object ``{"stream/group": [claim-idle ms, claim-interval ms]}``: the daemon's own
reclaim settings, so an operator's verdicts do not guess them from another host's config."""
HB_STARTED = "started"
HB_BEAT = "beat"
HB_READY = "ready"
HB_IN_FLIGHT = "in-flight"
HB_PROCESSED = "processed"
HB_FAILED = "failed"
HB_DEAD_LETTERED = "dead-lettered"
HB_DEGRADED = "degraded"
"""JSON object ``{"stream/group": "what fails"}`` of the daemon's degraded streams ({} if none)."""
HB_OUTBOX = "outbox"
"""Entries waiting in the daemon's outbox; absent without [outbox]."""
HB_PAUSED = "paused"
"""JSON list of the ``"stream/group"`` the daemon does not read now: `edged pause`."""
HB_INSTANCE = "instance"
"""Written by lua/heartbeat.lua: which run of the daemon holds the consumer name."""
