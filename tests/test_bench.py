"""The benchmark's own logic: options, targets, percentiles, latency files, the report's shape.

The measurements themselves run with ``python -m bench``; these tests keep its parts honest
without running a contender.
"""

from __future__ import annotations

import json
from array import array
from pathlib import Path
from typing import Any

import pytest
import redis

from bench import handlers, targets
from bench.cli import parse_args
from bench.consumer import Result
from bench.footprint import Footprint
from bench.latency import LatencyResult, _read_pairs, publish_paced
from bench.report import Report
from bench.startup import Timing
from bench.stream import preload

MIB = 1024 * 1024


def test_quick_sizes_and_explicit_options_win() -> None:
    full, quick = parse_args([]), parse_args(["--quick"])
    assert (full.entries, full.footprint_entries, full.cli_runs) == (200_000, 1_000_000, 15)
    assert (quick.entries, quick.footprint_entries, quick.cli_runs) == (50_000, 200_000, 3)
    assert full.sync_entries == full.entries
    assert parse_args(["--quick", "--footprint-entries", "7"]).footprint_entries == 7
    assert parse_args(["--sections", "cli,footprint"]).sections == ["cli", "footprint"]
    with pytest.raises(SystemExit):
        parse_args(["--sections", "everything"])


def test_targets() -> None:
    assert targets.throughput("async", 512, 0.95) == targets.Verdict(">= 0.90x raw", True)
    assert targets.throughput("sync", 64, 0.4) == targets.Verdict(">= 0.50x raw", False)
    assert targets.throughput("exec", 16, 0.01) is None
    assert targets.latency(1000, 1.9, None) == targets.Verdict("p99 <= 2 ms", True)
    assert targets.latency(10_000, 5.0, 2.0) == targets.Verdict("p99 <= 2x raw's", False)
    assert targets.latency(10_000, 5.0, None) == targets.Verdict("p99 <= 2x raw's", None)
    assert targets.startup("--version", 1.0) is None
    assert targets.rss_growth(50 * MIB, 45 * MIB).met is True
    assert targets.idle_rss(None).cell() == "<= 40 MiB: n/a"


def test_percentiles_are_nearest_rank() -> None:
    r = LatencyResult("raw", "", 1000, 1.0, latencies_ms=[float(n) for n in range(1, 1001)])
    assert (r.percentile(50), r.percentile(99), r.percentile(99.9), r.percentile(100)) == (
        500,
        990,
        999,
        1000,
    )
    assert LatencyResult("raw", "", 1000, 1.0).percentile(99) is None


def test_latency_file_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "lat.bin"
    monkeypatch.setenv(handlers.LATENCY_FILE_ENV, str(out))
    monkeypatch.setattr(handlers, "_seen", array("q", [100, 1_100_100, 200, 2_000_200, 300, 500_300]))
    handlers._write_latencies()
    # The first pair was published before the measured part began (at 150 ns): left out.
    assert _read_pairs(out, since_ns=150) == [0.5, 2.0]


def test_report_renders_every_section_with_failures() -> None:
    raw = Result("raw", "COUNT 500", 1000, measured=1000, seconds=0.01, startup_seconds=0.2)
    # The raw loop at edged's concurrency: a comparison row, never the headline raw figure.
    raw_16 = Result("raw", "COUNT 16", 1000, measured=1000, seconds=0.04,
                    extra={"same_count_as": 16})
    edged_16 = Result("edged", "concurrency=16", 1000, measured=1000, seconds=0.05,
                      extra={"handler": "async", "concurrency": 16})
    edged = Result(
        "edged",
        "concurrency=512",
        1000,
        measured=1000,
        seconds=0.02,
        extra={"handler": "async", "concurrency": 512},
    )
    failed = Result(
        "edged",
        "concurrency=16, exec handler",
        10,
        error="boom",
        extra={"handler": "exec", "concurrency": 16},
    )
    lat = [
        LatencyResult("raw", "r", 10_000, 1.0, achieved=9990.0, published=10, latencies_ms=[1.0] * 10),
        LatencyResult("edged", "e", 10_000, 1.0, achieved=9990.0, published=10, latencies_ms=[1.5] * 10),
        LatencyResult("edged", "e", 1000, 1.0, error="no latency file"),
    ]
    fp = Footprint(100, 512, idle_rss=30 * MIB, samples=[(25, 31 * MIB), (100, 45 * MIB)], drain_seconds=1.0)
    report = Report(
        server="valkey 9",
        cpus=2,
        results=[raw, raw_16, edged, edged_16, failed],
        sections=["throughput", "latency", "cli", "footprint"],
        latency=lat,
        startup=[
            Timing("edged --help", "--help", times=[0.1, 0.3, 0.2]),
            Timing("edged pending", "pending", error="x"),
        ],
        footprint=fp,
    )
    text = report.to_table()
    row = next(line for line in text.splitlines() if "concurrency=512" in line)
    assert "0.50x" in row and row.endswith(">= 0.90x raw: MISSED")
    row_16 = next(line for line in text.splitlines() if "concurrency=16  " in line)
    assert "0.20x" in row_16 and "0.80x" in row_16  # against COUNT 500, and against COUNT 16
    assert "failed: boom" in text
    assert "p99 <= 2x raw's: met" in text
    assert "median <= 0.2 s: met" in text
    assert "<= idle + 10 MiB: MISSED" in text
    doc = json.loads(report.to_json())
    assert doc["results"][2]["target_met"] is False
    assert doc["results"][2]["edged_vs_raw_same_count"] == 0.5  # no COUNT 512 row: the headline
    assert doc["results"][3]["edged_vs_raw_same_count"] == 0.8
    assert doc["latency"][1]["p99_vs_raw"] == 1.5
    assert doc["cli_startup"][0]["median_s"] == 0.2
    assert doc["footprint"]["after_drain_target"] == {"target": "<= idle + 10 MiB", "met": False}


def test_preload_payloads_are_what_a_client_would_add(r: redis.Redis, stream: str) -> None:
    last = preload(r, stream, 12_345)
    entries: list[Any] = [*r.xrange(stream, count=2), *r.xrevrange(stream, count=1)]  # type: ignore[misc]
    assert r.xlen(stream) == 12_345 and entries[-1][0] == last
    assert [f[b"payload"] for _, f in entries] == [
        json.dumps({"n": n, "kind": "bench"}).encode() for n in (0, 1, 12_344)
    ]
    r.delete(stream)


def test_paced_publisher_keeps_its_rate(r: redis.Redis, stream: str) -> None:
    done = publish_paced(r, stream, rate=2000, seconds=0.25)
    assert done.count == 500 == r.xlen(stream)
    assert 0.24 < done.seconds < 0.4
    head: list[Any] = r.xrange(stream, count=1)  # type: ignore[assignment]
    first = json.loads(head[0][1][b"payload"])
    assert first["n"] == 0 and first["t"] >= done.start_ns
    r.delete(stream)
