"""The results as text (one table per section) or as JSON, each figure with its target's verdict."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench import targets
from bench.consumer import POLL_INTERVAL, Result
from bench.footprint import IDLE_SETTLE, Footprint
from bench.latency import LatencyResult
from bench.startup import Timing
from bench.table import num, ratio, render
from bench.targets import Verdict

MIB = 1024 * 1024

# Kept for bench.cluster, which formats its figures the same way.
_num = num
_ratio = ratio


@dataclass
class Report:
    server: str
    cpus: int
    results: list[Result]
    settings_notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    quick: bool = False
    latency: list[LatencyResult] = field(default_factory=list)
    latency_concurrency: int | None = None
    startup: list[Timing] = field(default_factory=list)
    footprint: Footprint | None = None
    wall_seconds: float | None = None
    load_before: tuple[float, float, float] | None = None

    # Throughput

    def _best(self, contender: str, batch: bool | None = None) -> float | None:
        rates = [
            r.rate
            for r in self.results
            if r.contender == contender
            and r.rate
            and "same_count_as" not in r.extra  # a comparison row, not the headline raw loop
            and (batch is None or r.settings.startswith("batch=True") == batch)
        ]
        return max(rates, default=None)

    def vs_raw_same_count(self, result: Result) -> float | None:
        """An async edged row over the raw loop reading COUNT = its concurrency (or over the
        headline raw loop when that reads no more than the concurrency)."""
        if result.contender != "edged" or result.rate is None:
            return None
        if result.extra.get("handler") != "async":
            return None
        concurrency = result.extra.get("concurrency")
        for r in self.results:
            if r.contender == "raw" and r.extra.get("same_count_as") == concurrency and r.rate:
                return result.rate / r.rate
        return self.ratios(result)[0]

    def ratios(self, result: Result) -> tuple[float | None, float | None, float | None]:
        """``(edged/raw, edged/FastStream per entry, edged/FastStream batch)`` for an edged row.

        The headline FastStream ratio is against its per-entry modes: one handler call and one
        ack per entry, edged's programming model. Its batch mode (one call per list of 500) is
        shown beside it.
        """
        if result.contender != "edged" or result.rate is None:
            return None, None, None
        raw = self._best("raw")
        single, batch = self._best("FastStream", False), self._best("FastStream", True)
        rate = result.rate
        return (
            rate / raw if raw else None,
            rate / single if single else None,
            rate / batch if batch else None,
        )

    def throughput_verdict(self, result: Result) -> Verdict | None:
        if result.contender != "edged":
            return None
        return targets.throughput(
            result.extra["handler"], result.extra["concurrency"], self.ratios(result)[0]
        )

    # Latency

    def raw_p99(self, rate: int) -> float | None:
        for r in self.latency:
            if r.contender == "raw" and r.rate == rate:
                return r.percentile(99)
        return None

    def latency_verdict(self, result: LatencyResult) -> Verdict | None:
        if result.contender != "edged":
            return None
        return targets.latency(result.rate, result.percentile(99), self.raw_p99(result.rate))

    # JSON

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "server": self.server,
            "cpus": self.cpus,
            "quick": self.quick,
            "sections": self.sections,
            "wall_seconds": self.wall_seconds,
            "load_average_before": self.load_before,
            "poll_interval_s": POLL_INTERVAL,
            "results": [self._result_json(r) for r in self.results],
            "latency": [self._latency_json(r) for r in self.latency],
            "latency_edged_concurrency": self.latency_concurrency,
            "cli_startup": [
                {**t.summary(), **_verdict_json(targets.startup(t.key, t.median))} for t in self.startup
            ],
            "footprint": self._footprint_json(),
        }
        return json.dumps(doc, indent=2)

    def _result_json(self, r: Result) -> dict[str, Any]:
        vs_raw, vs_fast, vs_batch = self.ratios(r)
        return {
            "contender": r.contender,
            "settings": r.settings,
            "entries": r.entries,
            "measured_entries": r.measured,
            "seconds": r.seconds,
            "entries_per_s": r.rate,
            "us_per_entry": 1e6 / r.rate if r.rate else None,
            "startup_seconds": r.startup_seconds,
            "edged_vs_raw": vs_raw,
            "edged_vs_raw_same_count": self.vs_raw_same_count(r),
            "edged_vs_faststream": vs_fast,
            "edged_vs_faststream_batch": vs_batch,
            "error": r.error,
            "notes": r.notes,
            **r.extra,
            **_verdict_json(self.throughput_verdict(r)),
        }

    def _latency_json(self, r: LatencyResult) -> dict[str, Any]:
        raw = self.raw_p99(r.rate)
        p99 = r.percentile(99)
        vs_raw = p99 / raw if r.contender == "edged" and p99 is not None and raw else None
        return {**r.summary(), "p99_vs_raw": vs_raw, **_verdict_json(self.latency_verdict(r))}

    def _footprint_json(self) -> dict[str, Any] | None:
        fp = self.footprint
        if fp is None:
            return None
        return {
            **fp.summary(),
            "idle_target": targets.idle_rss(fp.idle_rss).to_json(),
            "after_drain_target": targets.rss_growth(fp.final_rss, fp.idle_rss).to_json(),
        }

    # Text

    def to_table(self) -> str:
        lines = []
        if "throughput" in self.sections:
            lines += ["Throughput: drain a preloaded backlog", *self._throughput_table(), ""]
        if "latency" in self.sections:
            lines += ["Latency: publish to handler at a fixed offered rate", *self._latency_table(), ""]
        if "cli" in self.sections:
            lines += ["CLI start-up: a fresh process per run", *self._startup_table(), ""]
        if "footprint" in self.sections and self.footprint is not None:
            lines += ["Footprint: edged's RSS", *self._footprint_table(), ""]
        lines.extend(self._footer())
        return "\n".join(lines)

    def _throughput_table(self) -> list[str]:
        head = (
            "contender",
            "concurrency/settings",
            "entries",
            "seconds",
            "entries/s",
            "µs/entry",
            "edged/raw",
            "edged/raw same COUNT",
            "edged/FastStream",
            "edged/FS batch",
            "start-up s",
            "target",
        )
        rows: list[tuple[str, ...]] = []
        failures: dict[int, str] = {}
        for i, r in enumerate(self.results):
            if r.error is not None:
                failures[i] = f"failed: {r.error}"
                rows.append((r.contender, r.settings, f"{r.entries}"))
                continue
            vs_raw, vs_fast, vs_batch = self.ratios(r)
            verdict = self.throughput_verdict(r)
            rows.append(
                (
                    r.contender,
                    r.settings,
                    f"{r.entries}",
                    num(r.seconds, ".2f"),
                    num(r.rate, ",.0f"),
                    num(1e6 / r.rate if r.rate else None, ",.1f"),
                    ratio(vs_raw),
                    ratio(self.vs_raw_same_count(r)),
                    ratio(vs_fast),
                    ratio(vs_batch),
                    num(r.startup_seconds, ".2f"),
                    verdict.cell() if verdict else "",
                )
            )
        return render(head, rows, set(range(2, 11)), failures)

    def _latency_table(self) -> list[str]:
        head = (
            "contender",
            "settings",
            "offered/s",
            "achieved/s",
            "pub lag ms",
            "samples",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "p99/raw",
            "target",
        )
        rows: list[tuple[str, ...]] = []
        failures: dict[int, str] = {}
        for i, r in enumerate(sorted(self.latency, key=lambda r: (r.rate, r.contender != "raw"))):
            if r.error is not None:
                failures[i] = f"failed: {r.error}"
                rows.append((r.contender, r.settings, f"{r.rate:,}"))
                continue
            doc = self._latency_json(r)
            verdict = self.latency_verdict(r)
            rows.append(
                (
                    r.contender,
                    r.settings,
                    f"{r.rate:,}",
                    num(r.achieved, ",.0f"),
                    num(r.publisher_lag_ms, ".2f"),
                    f"{len(r.latencies_ms)}",
                    num(doc["p50_ms"], ".2f"),
                    num(doc["p99_ms"], ".2f"),
                    num(doc["p99_9_ms"], ".2f"),
                    num(doc["max_ms"], ".2f"),
                    ratio(doc["p99_vs_raw"]),
                    verdict.cell() if verdict else "",
                )
            )
        return render(head, rows, set(range(2, 11)), failures)

    def _startup_table(self) -> list[str]:
        head = ("command", "runs", "min s", "median s", "target")
        rows: list[tuple[str, ...]] = []
        failures: dict[int, str] = {}
        for i, t in enumerate(self.startup):
            if t.error is not None:
                failures[i] = f"failed: {t.error}"
                rows.append((t.command,))
                continue
            verdict = targets.startup(t.key, t.median)
            rows.append(
                (
                    t.command,
                    f"{len(t.times)}",
                    num(t.min, ".3f"),
                    num(t.median, ".3f"),
                    verdict.cell() if verdict else "",
                )
            )
        return render(head, rows, {1, 2, 3}, failures)

    def _footprint_table(self) -> list[str]:
        fp = self.footprint
        assert fp is not None
        head = ("edged, concurrency " + str(fp.concurrency), "RSS MiB", "vs idle MiB", "target")
        idle = fp.idle_rss
        rows: list[tuple[str, ...]] = [
            (f"idle, {IDLE_SETTLE:g} s after its first read", _mib(idle), "", targets.idle_rss(idle).cell())
        ]
        for n, rss in fp.samples:
            final = n >= fp.entries
            label = f"after {n:,} of {fp.entries:,} read" + (" and acked" if final else "")
            growth = "" if idle is None else f"{(rss - idle) / MIB:+.1f}"
            verdict = targets.rss_growth(rss, idle).cell() if final else ""
            rows.append((label, _mib(rss), growth, verdict))
        trailers = {len(rows) - 1: f"failed: {fp.error}"} if fp.error else {}
        return render(head, rows, {1, 2}, trailers)

    def _footer(self) -> list[str]:
        ms = POLL_INTERVAL * 1000
        load = " ".join(f"{x:.2f}" for x in self.load_before) if self.load_before else "n/a"
        wall = f"{self.wall_seconds:.0f} s" if self.wall_seconds is not None else "n/a"
        out = [
            f"Server: {self.server} on 127.0.0.1, {self.cpus} CPUs shared by server, consumer and "
            f"harness; load average before the run {load}; whole run {wall}"
            + (" (--quick)." if self.quick else "."),
        ]
        if "throughput" in self.sections:
            out += [
                f"Throughput window: XINFO GROUPS is polled every {ms:.0f} ms; it opens at the first "
                "poll showing deliveries (t0, c0 entries already read)",
                "and closes at the first showing all N read and 0 pending (t1); entries/s = "
                "(N - c0) / (t1 - t0). Process start-up ('start-up s')",
                "is outside the window for every contender. edged/FastStream compares with "
                "FastStream's per-entry mode (one handler call",
                "and one XACK per entry, as edged); edged/FS batch with its batch mode (one call and "
                "one XACK per list of up to 500).",
                *self.settings_notes,
            ]
        if "latency" in self.sections:
            out.extend(
                [
                    "Latency: time.time_ns() at publish (in the payload) to time.time_ns() at edged's "
                    "handler start / raw's batch arrival; warm-up excluded; nearest-rank percentiles.",
                    "  pub lag ms: the publisher's worst delay behind its schedule (under 1 ms tick = "
                    "paced; more = it was held up, then sent a catch-up burst).",
                ]
            )
        fp = self.footprint
        if fp is not None and fp.drain_seconds:
            out.append(
                f"Footprint drain: {fp.entries:,} entries in {fp.drain_seconds:.1f} s "
                f"({fp.entries / fp.drain_seconds:,.0f}/s) at concurrency {fp.concurrency}."
            )
        for r in self.results:
            out.extend(f"Note ({r.contender} {r.settings}): {n}" for n in r.notes)
        for lr in self.latency:
            out.extend(f"Note (latency {lr.contender} {lr.rate}/s): {n}" for n in lr.notes)
        if self.footprint is not None:
            out.extend(f"Note (footprint): {n}" for n in self.footprint.notes)
        return out


def _verdict_json(verdict: Verdict | None) -> dict[str, Any]:
    return (
        {"target": None, "target_met": None}
        if verdict is None
        else {
            "target": verdict.target,
            "target_met": verdict.met,
        }
    )


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f}"
