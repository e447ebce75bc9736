"""Latency at a fixed offered rate: publish-to-handler time of edged and of the raw loop.

Per (contender, rate): a fresh stream with its group at ``0``, the consumer started and waited
for (its first XREADGROUP registers it), then the harness publishes at the offered rate for
``warmup`` seconds and then for ``seconds`` more. Each entry's payload carries ``t``, the
publisher's ``time.time_ns()`` just before its pipeline is sent; the consumer records
``(t, its own time.time_ns())`` when the entry reaches it (edged: at the start of
``bench.handlers.latency``; raw: when its XREADGROUP batch arrives) and writes them to a file
when stopped with SIGTERM. Only entries published after the warm-up count.

Pacing: every ``TICK`` the publisher sends, in one pipeline, the entries due by then
(``rate x elapsed - sent``), so a late tick catches up and the long-run rate is exact; the
achieved rate over the measured part is reported beside the offered one.
"""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.consumer import Consumer, ContenderFailed, wait_for
from bench.contenders import (
    CONSUMER,
    GROUP,
    Settings,
    edged_argv,
    edged_config,
    python_module,
)
from bench.handlers import LATENCY_FILE_ENV
from bench.stream import fresh_stream

TICK = 0.001
DRAIN_TIMEOUT = 30.0


@dataclass
class LatencyResult:
    contender: str
    settings: str
    rate: int
    """Offered entries/s."""
    seconds: float
    achieved: float | None = None
    published: int = 0
    """Entries published in the measured part (after the warm-up)."""
    publisher_lag_ms: float | None = None
    """The publisher's worst lag behind its schedule in the measured part (see Published)."""
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float | None:
        """Nearest rank: the smallest sample with at least ``p`` % of the samples at or below it."""
        if not self.latencies_ms:
            return None
        # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point.
        rank = max(1, math.ceil(round(p / 100 * len(self.latencies_ms), 6)))
        return self.latencies_ms[rank - 1]

    def summary(self) -> dict[str, Any]:
        return {
            "contender": self.contender,
            "settings": self.settings,
            "offered_per_s": self.rate,
            "achieved_per_s": self.achieved,
            "seconds": self.seconds,
            "published": self.published,
            "publisher_max_lag_ms": self.publisher_lag_ms,
            "samples": len(self.latencies_ms),
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "p99_9_ms": self.percentile(99.9),
            "max_ms": self.latencies_ms[-1] if self.latencies_ms else None,
            "error": self.error,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Published:
    count: int
    seconds: float
    start_ns: int
    last_id: bytes
    max_lag: float
    """Seconds by which a tick's oldest entry was sent after it fell due, at worst (< 1 tick
    when pacing holds; more when the publisher was held up and sent a burst to catch up)."""


def publish_paced(client: redis.Redis, stream: str, rate: int, seconds: float, first: int = 0) -> Published:
    """Publish ``rate x seconds`` entries, each tick's due ones in one pipeline."""
    total = round(rate * seconds)
    sent = 0
    last_id = b""
    max_lag = 0.0
    start_ns = time.time_ns()
    start = time.perf_counter()
    while sent < total:
        elapsed = time.perf_counter() - start
        delay = (math.floor(elapsed / TICK) + 1) * TICK - elapsed
        time.sleep(delay)
        elapsed = time.perf_counter() - start
        due = min(total, int(rate * elapsed))
        if due <= sent:
            continue
        max_lag = max(max_lag, elapsed - (sent + 1) / rate)
        pipe = client.pipeline(transaction=False)
        t = time.time_ns()
        for n in range(first + sent, first + due):
            pipe.execute_command("XADD", stream, "*", "payload", f'{{"t":{t},"n":{n},"kind":"bench"}}')
        last_id = pipe.execute()[-1]
        sent = due
    return Published(sent, time.perf_counter() - start, start_ns, last_id, max_lag)


def _read_pairs(path: Path, since_ns: int) -> list[float]:
    if not path.exists():
        raise ContenderFailed(f"no latency file {path.name}: the consumer did not write it at exit")
    pairs = array("q")
    pairs.frombytes(path.read_bytes())
    return sorted(
        (pairs[i + 1] - pairs[i]) / 1e6 for i in range(0, len(pairs) - 1, 2) if pairs[i] >= since_ns
    )


def measure(
    client: redis.Redis,
    result: LatencyResult,
    *,
    stream: str,
    argv: list[str],
    out: Path,
    warmup: float,
    timeout: float,
    extra_env: dict[str, str] | None = None,
) -> LatencyResult:
    """Start the consumer, publish warm-up then measured entries, stop it, read its file."""
    fresh_stream(client, stream, GROUP, 0)
    out.unlink(missing_ok=True)
    consumer: Consumer | None = None
    try:
        consumer = Consumer(argv, extra_env)
        wait_for(
            client,
            stream,
            GROUP,
            consumer,
            consumer.started + timeout,
            lambda s: s.consumers > 0,
            "the consumer to register",
        )
        warm = publish_paced(client, stream, result.rate, warmup) if warmup > 0 else None
        done = publish_paced(client, stream, result.rate, result.seconds, warm.count if warm else 0)
        result.published = done.count
        result.achieved = done.count / done.seconds
        result.publisher_lag_ms = done.max_lag * 1000
        total = done.count + (warm.count if warm else 0)
        wait_for(
            client,
            stream,
            GROUP,
            consumer,
            time.monotonic() + DRAIN_TIMEOUT,
            lambda s: s.drained(total, done.last_id),
            "the last entries",
        )
        if note := consumer.stop():
            result.notes.append(note)
        consumer = None
        result.latencies_ms = _read_pairs(out, done.start_ns)
        if len(result.latencies_ms) != done.count:
            result.notes.append(f"{len(result.latencies_ms)} samples for {done.count} entries published")
    except ContenderFailed as exc:
        result.error = str(exc)
    finally:
        if consumer is not None and (note := consumer.stop()):
            result.notes.append(note)
        client.delete(stream)
    return result


def run_edged(
    client: redis.Redis,
    settings: Settings,
    workdir: Path,
    rate: int,
    seconds: float,
    warmup: float,
    concurrency: int,
) -> LatencyResult:
    stream = f"bench:latency:edged:{rate}"
    out = workdir / f"latency-edged-{rate}.bin"
    result = LatencyResult("edged", f"concurrency={concurrency}, async handler", rate, seconds)
    try:
        argv = edged_argv(settings, edged_config(workdir, stream, concurrency, "latency"))
    except ContenderFailed as exc:
        result.error = str(exc)
        return result
    return measure(
        client,
        result,
        stream=stream,
        argv=argv,
        out=out,
        warmup=warmup,
        timeout=settings.timeout,
        extra_env={LATENCY_FILE_ENV: str(out)},
    )


def run_raw(
    client: redis.Redis,
    settings: Settings,
    workdir: Path,
    rate: int,
    seconds: float,
    warmup: float,
    count: int,
) -> LatencyResult:
    stream = f"bench:latency:raw:{rate}"
    out = workdir / f"latency-raw-{rate}.bin"
    argv = python_module(
        "bench.raw_latency",
        "--url",
        settings.url,
        "--stream",
        stream,
        "--group",
        GROUP,
        "--consumer",
        CONSUMER,
        "--count",
        str(count),
        "--out",
        str(out),
    )
    result = LatencyResult("raw", f"XREADGROUP COUNT {count} BLOCK 1000", rate, seconds)
    return measure(client, result, stream=stream, argv=argv, out=out, warmup=warmup, timeout=settings.timeout)
