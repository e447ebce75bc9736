"""Per-stream counters kept as plain integers on the hot path; metrics and STATUS= read them."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Upper bounds (seconds) of the handler-latency histogram buckets; +Inf is implied.
HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class Histogram:
    """A cheap fixed-bucket histogram for the hot path; metrics.py exposes it to Prometheus."""

    bounds: tuple[float, ...] = HANDLER_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(HANDLER_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1


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
    groups_recreated: int = 0  # the group vanished (failover, deletion) and was recreated
    reads: int = 0
    read_errors: int = 0
    in_flight: int = 0
    handler_seconds: Histogram = field(default_factory=Histogram)

    @property
    def processed(self) -> int:
        return self.acked + self.stale_acks + self.dead_lettered
