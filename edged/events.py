"""What a handler receives, and what it may raise to steer the outcome."""

from __future__ import annotations

from typing import Any

import msgspec


class Event(msgspec.Struct, kw_only=True):
    """One stream entry handed to a handler.

    ``fields`` holds every field of the entry as bytes (the body included, under ``payload``);
    ``payload`` is the body decoded with the stream's codec (``None`` when the entry has none);
    ``delivery`` is Redis's delivery counter for this entry in this group (1 on first delivery).
    """

    stream: str
    group: str
    id: str
    fields: dict[str, bytes]
    payload: Any
    delivery: int

    @property
    def msgid(self) -> str | None:
        """The ``edged-msgid`` of an entry published through a daemon's outbox: the same in
        every copy of it, so a handler can drop a duplicate by it; None for other entries."""
        value = self.fields.get("edged-msgid")
        return None if value is None else value.decode("ascii", "replace")


class Retry(Exception):
    """Raise from a handler to have the entry delivered again, not before ``after`` seconds."""

    def __init__(self, reason: str = "retry requested", *, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class Reject(Exception):
    """Raise from a handler to move the entry to the dead-letter stream now: retrying cannot help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
