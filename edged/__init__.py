"""edged: a Redis Streams edge daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edged.events import Event, Reject, Retry

__version__ = "0.1.0"

__all__ = ["Event", "Reject", "Retry", "__version__"]


def __getattr__(name: str) -> Any:
    """``from edged import Event, Reject, Retry`` (the handlers' API), loaded on first use: every
    ``edged`` command imports this package, and ``edged --help`` needs none of it (edged.events
    imports msgspec: start-up time)."""
    if name in ("Event", "Reject", "Retry"):
        from edged import events

        return getattr(events, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
