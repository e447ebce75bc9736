"""edged's memory: idle, then while and after draining a large backlog, in one process.

N entries (``--footprint-entries``, 1 000 000) are preloaded (untimed) and the group created at
``$``, after them, so the daemon started on it has nothing to read: ``IDLE_SETTLE`` s after its
first XREADGROUP its RSS is the idle figure. Then ``XGROUP SETID <stream> bench 0 ENTRIESREAD 0``
hands it the whole backlog (its blocked read returns within ``read-block``, 1 s), and the
harness, polling ``XINFO GROUPS`` every 20 ms, reads the daemon's RSS at the first poll with a
quarter, half, three quarters of N read, and at the first with all N read and acked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.consumer import POLL_INTERVAL, Consumer, ContenderFailed, wait_for
from bench.contenders import GROUP, Settings, edged_argv, edged_config
from bench.stream import group_state, preload

IDLE_SETTLE = 2.0
QUARTERS = (0.25, 0.5, 0.75)


@dataclass
class Footprint:
    entries: int
    concurrency: int
    idle_rss: int | None = None
    samples: list[tuple[int, int]] = field(default_factory=list)
    """``(entries read, RSS)``; the last is taken with all N read and acked."""
    drain_seconds: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def final_rss(self) -> int | None:
        if self.samples and self.samples[-1][0] >= self.entries:
            return self.samples[-1][1]
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "concurrency": self.concurrency,
            "idle_rss_bytes": self.idle_rss,
            "samples": [{"entries_read": n, "rss_bytes": rss} for n, rss in self.samples],
            "after_drain_rss_bytes": self.final_rss,
            "drain_seconds": self.drain_seconds,
            "drain_entries_per_s": self.entries / self.drain_seconds if self.drain_seconds else None,
            "error": self.error,
            "notes": self.notes,
        }


def _rss(consumer: Consumer) -> int:
    rss: int = psutil.Process(consumer.pid).memory_info().rss
    return rss


def _drain(
    client: redis.Redis, consumer: Consumer, stream: str, last_id: bytes, fp: Footprint, timeout: float
) -> None:
    marks = [int(q * fp.entries) for q in QUARTERS]
    started = time.monotonic()
    deadline = started + timeout
    t0 = None
    while True:
        state = group_state(client, stream, GROUP)
        if t0 is None and state.delivered > 0:
            t0 = time.monotonic()
        while marks and state.delivered >= marks[0]:
            fp.samples.append((state.delivered, _rss(consumer)))
            marks.pop(0)
        if state.drained(fp.entries, last_id):
            fp.drain_seconds = time.monotonic() - (t0 or started)
            fp.samples.append((fp.entries, _rss(consumer)))
            return
        consumer.check_alive()
        if time.monotonic() > deadline:
            raise ContenderFailed(f"timeout draining (read {state.delivered}, pending {state.pending})")
        time.sleep(POLL_INTERVAL)


def run(
    client: redis.Redis, settings: Settings, workdir: Path, entries: int, concurrency: int, timeout: float
) -> Footprint:
    fp = Footprint(entries, concurrency)
    stream = "bench:footprint"
    client.delete(stream)
    last_id = preload(client, stream, entries)
    client.xgroup_create(stream, GROUP, id="$")
    consumer: Consumer | None = None
    try:
        consumer = Consumer(edged_argv(settings, edged_config(workdir, stream, concurrency)))
        wait_for(
            client,
            stream,
            GROUP,
            consumer,
            consumer.started + settings.timeout,
            lambda s: s.consumers > 0,
            "the consumer to register",
        )
        time.sleep(IDLE_SETTLE)
        consumer.check_alive()
        fp.idle_rss = _rss(consumer)
        client.xgroup_setid(stream, GROUP, id="0", entries_read=0)
        _drain(client, consumer, stream, last_id, fp, timeout)
    except ContenderFailed as exc:
        fp.error = str(exc)
    finally:
        if consumer is not None and (note := consumer.stop()):
            fp.notes.append(note)
        client.delete(stream)
    return fp
