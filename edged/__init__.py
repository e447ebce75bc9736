"""edged: a Redis Streams edge daemon."""

from edged.events import Event, Reject, Retry

__version__ = "0.1.0"

__all__ = ["Event", "Reject", "Retry", "__version__"]
