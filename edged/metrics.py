"""Prometheus metrics, built at scrape time from the counters the hot path already keeps.

The consumers only bump plain ints on ``StreamStats``; ``EdgedCollector`` turns them into metric
families when /metrics is scraped, so no prometheus-client call ever runs per entry. Group lag,
pending and the oldest pending entry are Redis's view, not this daemon's: ``GroupSampler`` asks
Redis for them every few seconds in one pipeline and keeps the last sample for the scrapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from edged import __version__
from edged.connection import TRANSIENT_ERRORS
from edged.stats import Histogram

if TYPE_CHECKING:
    from prometheus_client import Metric

    from edged.daemon import Daemon

log = logging.getLogger("edged.metrics")

SAMPLE_EVERY = 3.0  # seconds between two samples of XINFO GROUPS / XPENDING

# The `outcome` label of edged_messages_total and the StreamStats counter behind each value.
OUTCOMES = {
    "acked": "acked",
    "stale_ack": "stale_acks",
    "failed": "failed",
    "retried": "retried",
    "dead_lettered": "dead_lettered",
    "released": "released",
    "deleted": "deleted",
    "cancelled": "cancelled",
    "reclaimed": "reclaimed",
    "lost_lease": "lost_leases",
}
LABELS = ["stream", "group"]


@dataclass
class GroupSample:
    """Redis's view of one consumer group at ``sampled_at`` (time.time())."""

    lag: int | None  # None when Redis cannot tell (XINFO GROUPS reports nil after some XDELs)
    pending: int
    oldest_pending_ms: int | None  # ms timestamp of the lowest pending id, on Redis's clock
    clock_offset: float  # Redis's clock minus ours, seconds
    sampled_at: float


def id_ms(entry_id: bytes | str) -> int:
    """The millisecond timestamp part of a stream id."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


class GroupSampler:
    """Samples lag, pending and the oldest pending id of every configured group."""

    def __init__(self, daemon: Daemon, every: float = SAMPLE_EVERY) -> None:
        self.daemon = daemon
        self.every = every
        self.samples: dict[tuple[str, str], GroupSample] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except (*TRANSIENT_ERRORS, RedisError) as exc:
                # Keep the last sample: the readers log Redis being away; this is not news.
                log.debug("cannot sample consumer groups: %s", exc)
            await anyio.sleep(self.every)

    async def sample(self) -> None:
        client = self.daemon.client  # looked up each time: a failover may replace it
        if client is None:
            return
        pipe = client.pipeline(transaction=False)
        pipe.time()
        for s in self.daemon.streams:
            pipe.xinfo_groups(s.stream)
            pipe.xpending(s.stream, s.group)
        try:
            replies = await pipe.execute(raise_on_error=False)
        finally:
            await pipe.reset()
        if isinstance(replies[0], Exception):
            raise replies[0]
        seconds, micros = replies[0]
        now = time.time()
        offset = seconds + micros / 1e6 - now
        for i, s in enumerate(self.daemon.streams):
            groups, summary = replies[1 + 2 * i], replies[2 + 2 * i]
            if isinstance(groups, Exception) or isinstance(summary, Exception):
                continue  # no stream or group yet (the reader creates them): nothing to report
            info = next((g for g in groups if _text(g.get("name")) == s.group), None)
            if info is None:
                continue
            lag = info.get("lag")
            oldest = summary.get("min")
            self.samples[(s.stream, s.group)] = GroupSample(
                lag=None if lag is None else int(lag),
                pending=int(info.get("pending") or 0),
                oldest_pending_ms=id_ms(oldest) if oldest else None,
                clock_offset=offset,
                sampled_at=now,
            )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class EdgedCollector(Collector):
    """Reads the daemon's counters and the last group sample at each scrape."""

    def __init__(self, daemon: Daemon, sampler: GroupSampler | None = None) -> None:
        self.daemon = daemon
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        info = GaugeMetricFamily("edged_info", "This daemon: version and consumer name.",
                                 labels=["version", "consumer"])
        info.add_metric([__version__, daemon.consumer], 1)
        yield info

        messages = CounterMetricFamily(
            "edged_messages", "Entries by what happened to them here (events, not a partition: "
            "a reclaimed entry is counted again when it is acked).", labels=[*LABELS, "outcome"])
        reads = CounterMetricFamily("edged_reads", "Successful XREADGROUP calls.", labels=LABELS)
        read_errors = CounterMetricFamily("edged_read_errors", "Failed XREADGROUP calls.",
                                          labels=LABELS)
        recreated = CounterMetricFamily("edged_groups_recreated",
                                        "Times the group had vanished and was recreated.",
                                        labels=LABELS)
        in_flight = GaugeMetricFamily("edged_in_flight", "Handlers running now.", labels=LABELS)
        handler = HistogramMetricFamily("edged_handler_seconds", "Handler run time.",
                                        labels=LABELS)
        up = GaugeMetricFamily("edged_stream_up", "1 while the stream's reader reaches Redis.",
                               labels=LABELS)
        for s in daemon.streams:
            stats = s.stats
            labels = [s.stream, s.group]
            for outcome, attr in OUTCOMES.items():
                messages.add_metric([*labels, outcome], getattr(stats, attr))
            reads.add_metric(labels, stats.reads)
            read_errors.add_metric(labels, stats.read_errors)
            recreated.add_metric(labels, getattr(stats, "groups_recreated", 0))
            in_flight.add_metric(labels, stats.in_flight)
            handler.add_metric(labels, _buckets(stats.handler_seconds), stats.handler_seconds.total)
            up.add_metric(labels, 1 if s.connected else 0)
        yield from (messages, reads, read_errors, recreated, in_flight, handler, up)

        redis_up = GaugeMetricFamily("edged_redis_up", "1 while every stream's reader reaches Redis.")
        redis_up.add_metric([], 1 if all(s.connected for s in daemon.streams) else 0)
        yield redis_up
        ready = GaugeMetricFamily("edged_ready", "1 while every stream is being read.")
        ready.add_metric([], 1 if all(s.ready.is_set() and s.connected for s in daemon.streams)
                         else 0)
        yield ready
        failovers = CounterMetricFamily("edged_failovers", "Sentinel failovers followed.")
        failovers.add_metric([], getattr(daemon, "failovers", 0))
        yield failovers

        if self.sampler is not None:
            yield from self._group_metrics(self.sampler.samples)

    @staticmethod
    def _group_metrics(samples: dict[tuple[str, str], GroupSample]) -> Iterator[Metric]:
        lag = GaugeMetricFamily("edged_group_lag", "Entries not yet delivered to the group "
                                "(XINFO GROUPS lag; absent when Redis cannot tell).", labels=LABELS)
        pending = GaugeMetricFamily("edged_group_pending",
                                    "Entries delivered and not acked, all consumers.", labels=LABELS)
        oldest = GaugeMetricFamily("edged_group_oldest_pending_age_seconds",
                                   "Age of the oldest pending entry (from its id), 0 if none.",
                                   labels=LABELS)
        sampled = GaugeMetricFamily("edged_group_sampled_timestamp_seconds",
                                    "When the group gauges were sampled from Redis.", labels=LABELS)
        now = time.time()
        for (stream, group), sample in samples.items():
            labels = [stream, group]
            if sample.lag is not None:
                lag.add_metric(labels, sample.lag)
            pending.add_metric(labels, sample.pending)
            age = 0.0
            if sample.oldest_pending_ms is not None:
                # Both ends on Redis's clock, so a skewed host clock does not skew the age.
                age = max(0.0, now + sample.clock_offset - sample.oldest_pending_ms / 1000)
            oldest.add_metric(labels, age)
            sampled.add_metric(labels, sample.sampled_at)
        yield from (lag, pending, oldest, sampled)


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    """Histogram counts per bucket → Prometheus's cumulative ``le`` buckets."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(hist.bounds, hist.counts, strict=False):
        running += count
        out.append((repr(float(bound)), running))
    out.append(("+Inf", hist.count))
    return out


def make_registry(daemon: Daemon, sampler: GroupSampler | None) -> CollectorRegistry:
    """A registry of its own (not the global one): edged's metrics plus process_* metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgedCollector(daemon, sampler))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
