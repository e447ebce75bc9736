"""Prometheus metrics, built at scrape time from the counters the hot path already keeps.

The consumers only bump plain ints on ``StreamStats``; ``EdgedCollector`` turns them into metric
families when /metrics is scraped, so no prometheus-client call ever runs per entry. Group lag,
pending and the oldest pending entry are Redis's view, not this daemon's: ``GroupSampler`` asks
Redis for them every few seconds in one pipeline and keeps the last sample for the scrapes.

Every metric is per physical stream (label ``stream``); ``edged_stream_shard_info`` names the
logical stream and shard index of each, so that dashboards can sum the shards of a logical
stream (``* on (stream, group) group_left(logical) edged_stream_shard_info``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edged import __version__
from edged.connect.transient import TRANSIENT_ERRORS
from edged.consume.stats import Histogram
from edged.daemon.status import DaemonStatus
from edged.daemon.trim import RetentionState
from edged.ids import id_ms
from edged.replies import text

if TYPE_CHECKING:
    from prometheus_client import Metric

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
SHARD_LABELS = [*LABELS, "logical", "shard"]

@dataclass
class GroupGauges:
    """Redis's view of one consumer group at ``sampled_at`` (time.time())."""

    lag: int | None  # None when Redis cannot tell (XINFO GROUPS reports nil after some XDELs)
    pending: int
    oldest_pending_ms: int | None  # ms timestamp of the lowest pending id, on Redis's clock
    dead_letters: int  # entries in the stream's dead-letter stream
    clock_offset: float  # Redis's clock minus ours, seconds
    sampled_at: float


class GroupSampler:
    """Samples lag, pending and the oldest pending id of every configured group.

    On a cluster too: TIME goes on its own (a cluster pipeline refuses keyless commands) and
    the pipeline holds only per-key commands, which the cluster client sends to each key's
    node; one XINFO GROUPS and one XPENDING per stream.
    """

    def __init__(self, client: Redis, groups: list[tuple[str, str]],
                 every: float = SAMPLE_EVERY, dead_letters: dict[str, str] | None = None) -> None:
        """``dead_letters``: stream → its dead-letter stream, whose length is sampled too."""
        self.client = client
        self.groups = groups
        self.dead_letters = dead_letters or {}
        self.every = every
        self.samples: dict[tuple[str, str], GroupGauges] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except (*TRANSIENT_ERRORS, RedisError) as exc:
                # Keep the last sample: the readers log Redis being away; this is not news.
                log.debug("cannot sample consumer groups: %s", exc)
            await anyio.sleep(self.every)

    async def sample(self) -> None:
        seconds, micros = await self.client.time()
        now = time.time()
        offset = seconds + micros / 1e6 - now
        pipe = self.client.pipeline(transaction=False)
        for stream, group in self.groups:
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, group)
            pipe.xlen(self.dead_letters.get(stream, f"{stream}:dead"))
        try:
            replies = await pipe.execute(raise_on_error=False)
        finally:
            await pipe.reset()
        for i, (stream, group) in enumerate(self.groups):
            groups, summary, dead = replies[3 * i], replies[1 + 3 * i], replies[2 + 3 * i]
            if isinstance(groups, Exception) or isinstance(summary, Exception):
                continue  # no stream or group yet (the reader creates them): nothing to report
            info = next((g for g in groups if text(g.get("name")) == group), None)
            if info is None:
                continue
            lag = info.get("lag")
            oldest = summary.get("min")
            self.samples[(stream, group)] = GroupGauges(
                lag=None if lag is None else int(lag),
                pending=int(info.get("pending") or 0),
                oldest_pending_ms=id_ms(oldest) if oldest else None,
                dead_letters=0 if isinstance(dead, Exception) else int(dead),
                clock_offset=offset,
                sampled_at=now,
            )


class EdgedCollector(Collector):
    """Reads the daemon's status and the last group sample at each scrape."""

    def __init__(self, status: Callable[[], DaemonStatus], sampler: GroupSampler | None = None,
                 retention: dict[str, RetentionState] | None = None) -> None:
        self.status = status
        self.sampler = sampler
        self.retention = retention

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        info = GaugeMetricFamily("edged_info", "This daemon: version and consumer name.",
                                 labels=["version", "consumer"])
        info.add_metric([__version__, status.consumer], 1)
        yield info
        yield from self._stream_metrics(status)
        yield from self._daemon_metrics(status)
        if self.sampler is not None:
            yield from self._group_metrics(self.sampler.samples)
        if self.retention:
            yield from self._retention_metrics(self.retention)

    @staticmethod
    def _retention_metrics(states: dict[str, RetentionState]) -> Iterator[Metric]:
        trimmed = CounterMetricFamily("edged_stream_trimmed", "Entries this daemon trimmed "
                                      "(retention, max-len).", labels=["stream"])
        blocked = GaugeMetricFamily(
            "edged_stream_retention_blocked_seconds", "How far past retention the oldest entry "
            "the group holds back is (max-len alone: its age); 0 when not blocked. Reported by "
            "the daemon holding the stream's trim lease, 0 by the others.", labels=LABELS)
        for stream, state in states.items():
            trimmed.add_metric([stream], state.trimmed)
            for group, seconds in state.blocked.items():
                blocked.add_metric([stream, group], seconds)
        yield from (trimmed, blocked)

    @staticmethod
    def _stream_metrics(status: DaemonStatus) -> Iterator[Metric]:

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
        degraded = GaugeMetricFamily(
            "edged_stream_degraded", "1 while the stream fails with an error waiting does not "
            "fix (WRONGTYPE, NOPERM...); the error is in /readyz and the log.", labels=LABELS)
        errors = CounterMetricFamily("edged_stream_errors",
                                     "Errors that degraded the stream, every retry counted.",
                                     labels=LABELS)
        restarts = CounterMetricFamily("edged_stream_restarts",
                                       "Times the stream's consumer failed and was started again.",
                                       labels=LABELS)
        shard_info = GaugeMetricFamily(
            "edged_stream_shard_info", "Always 1: the logical stream and shard index of the "
            "stream (an unsharded stream is its own logical stream, shard 0).",
            labels=SHARD_LABELS)
        paused = GaugeMetricFamily("edged_stream_paused", "1 while `edged pause` holds the "
                                   "stream: not read until resumed.", labels=LABELS)
        for s in status.streams:
            shard_info.add_metric([s.stream, s.group, s.logical, str(s.shard)], 1)
            paused.add_metric([s.stream, s.group], 1 if s.paused else 0)
            stats = s.stats
            labels = [s.stream, s.group]
            for outcome, attr in OUTCOMES.items():
                messages.add_metric([*labels, outcome], getattr(stats, attr))
            reads.add_metric(labels, stats.reads)
            read_errors.add_metric(labels, stats.read_errors)
            recreated.add_metric(labels, stats.groups_recreated)
            in_flight.add_metric(labels, stats.in_flight)
            handler.add_metric(labels, _buckets(stats.handler_seconds), stats.handler_seconds.total)
            up.add_metric(labels, 1 if s.connected else 0)
            degraded.add_metric(labels, 1 if s.degraded else 0)
            errors.add_metric(labels, s.errors)
            restarts.add_metric(labels, s.restarts)
        yield from (messages, reads, read_errors, recreated, in_flight, handler, up, degraded,
                    errors, restarts, shard_info, paused)

    @staticmethod
    def _daemon_metrics(status: DaemonStatus) -> Iterator[Metric]:
        redis_up = GaugeMetricFamily("edged_redis_up", "1 while every stream's reader reaches Redis.")
        redis_up.add_metric([], 1 if status.connected else 0)
        yield redis_up
        ready = GaugeMetricFamily("edged_ready", "1 while the daemon is ready (/readyz).")
        ready.add_metric([], 1 if status.ready else 0)
        yield ready
        alive = GaugeMetricFamily("edged_alive", "1 while the daemon is alive (/healthz).")
        alive.add_metric([], 1 if status.alive else 0)
        yield alive
        failovers = CounterMetricFamily("edged_failovers", "Sentinel failovers followed.")
        failovers.add_metric([], status.failovers)
        yield failovers

    @staticmethod
    def _group_metrics(samples: dict[tuple[str, str], GroupGauges]) -> Iterator[Metric]:
        lag = GaugeMetricFamily("edged_group_lag", "Entries not yet delivered to the group "
                                "(XINFO GROUPS lag; absent when Redis cannot tell).", labels=LABELS)
        pending = GaugeMetricFamily("edged_group_pending",
                                    "Entries delivered and not acked, all consumers.", labels=LABELS)
        oldest = GaugeMetricFamily("edged_group_oldest_pending_age_seconds",
                                   "Age of the oldest pending entry (from its id), 0 if none.",
                                   labels=LABELS)
        sampled = GaugeMetricFamily("edged_group_sampled_timestamp_seconds",
                                    "When the group gauges were sampled from Redis.", labels=LABELS)
        dead = GaugeMetricFamily("edged_dead_letter_entries", "Entries in the stream's "
                                 "dead-letter stream (XLEN): alert when it grows.", labels=LABELS)
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
            dead.add_metric(labels, sample.dead_letters)
        yield from (lag, pending, oldest, sampled, dead)


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    """Histogram counts per bucket → Prometheus's cumulative ``le`` buckets."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(hist.bounds, hist.counts, strict=False):
        running += count
        out.append((repr(float(bound)), running))
    out.append(("+Inf", hist.count))
    return out


def make_registry(status: Callable[[], DaemonStatus], sampler: GroupSampler | None,
                  retention: dict[str, RetentionState] | None = None) -> CollectorRegistry:
    """A registry of its own (not the global one): edged's metrics plus process_* metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgedCollector(status, sampler, retention))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
