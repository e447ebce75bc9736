"""Per-stream counters kept as plain integers on the hot path; metrics and STATUS= read them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StreamStats:
    stream: str
    group: str
    acked: int = 0
    stale_acks: int = 0  # finished here, but the entry belonged to someone else by then
    failed: int = 0  # handler raised or exec failed; entry left pending for a retry
    retried: int = 0  # handler asked for a retry
    dead_lettered: int = 0
    released: int = 0  # fetched, never started, handed back at shutdown
    deleted: int = 0  # pending ids whose entry was deleted or trimmed from the stream
    cancelled: int = 0  # still running when the grace period ended; left pending
    reclaimed: int = 0  # taken over with XAUTOCLAIM (from dead peers, or our own retries)
    lost_leases: int = 0  # a peer claimed an entry we were still working on
    reads: int = 0
    read_errors: int = 0
    in_flight: int = 0
    handler_seconds: list[float] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.acked + self.stale_acks + self.dead_lettered
