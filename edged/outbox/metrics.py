"""The outbox's Prometheus metrics, read from its counters at scrape time.

Flush rate is ``rate(edged_outbox_forwarded_total[1m])``; accept rate the same of
``edged_outbox_accepted_total``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edged.outbox.service import Outbox

if TYPE_CHECKING:
    from prometheus_client import Metric


class OutboxCollector(Collector):
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def collect(self) -> Iterator[Metric]:
        depth = self.outbox.depth
        stats = self.outbox.stats
        yield GaugeMetricFamily("edged_outbox_entries", "Entries accepted and not yet in Redis.",
                                value=depth.entries)
        yield GaugeMetricFamily("edged_outbox_bytes", "Bytes of those entries (fields and "
                                "stream names), counted against max-bytes.", value=depth.bytes)
        age = 0.0 if depth.oldest_ms is None else max(0.0, time.time() - depth.oldest_ms / 1000)
        yield GaugeMetricFamily("edged_outbox_oldest_age_seconds", "How long the oldest waiting "
                                "entry has waited; 0 when the outbox is empty.", value=age)
        yield GaugeMetricFamily("edged_outbox_capacity_entries", "max-entries.",
                                value=self.outbox.cfg.max_entries)
        yield GaugeMetricFamily("edged_outbox_capacity_bytes", "max-bytes.",
                                value=self.outbox.cfg.max_bytes.bytes)
        yield CounterMetricFamily("edged_outbox_accepted", "Entries accepted (on disk, answered).",
                                  value=stats.accepted)
        yield CounterMetricFamily("edged_outbox_forwarded", "Entries Redis acknowledged and the "
                                  "outbox let go.", value=stats.forwarded)
        yield CounterMetricFamily("edged_outbox_unreplicated", "Entries forwarded that fewer "
                                  "than wait-replicas replicas acknowledged in wait-timeout (on "
                                  "the primary; not sent again).", value=stats.unreplicated)
        refused = CounterMetricFamily("edged_outbox_refused", "Entries refused, by reason: full "
                                      "(max-entries or max-bytes), closed (starting or stopping), "
                                      "write_failed (disk).", labels=["reason"])
        for reason, count in stats.refused.items():
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily("edged_outbox_forward_errors", "Forward attempts Redis "
                                  "refused (per stream and batch).", value=stats.forward_errors)
        blocked = GaugeMetricFamily("edged_outbox_stream_blocked", "1 for each stream whose "
                                    "entries wait because Redis refused the last attempt.",
                                    labels=["stream"])
        for stream in stats.blocked:
            blocked.add_metric([stream], 1)
        yield blocked
