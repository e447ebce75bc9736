"""The targets of issue 14, and the verdict printed next to each figure (never an exit code)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024

THROUGHPUT_VS_RAW = {("async", 512): 0.9, ("async", 64): 0.6, ("async", 16): 0.35, ("sync", 64): 0.5}
"""edged entries/s over raw's, by (handler, concurrency)."""
LATENCY_P99_MS_AT = {1000: 2.0}
"""edged's p99 in ms at these offered rates (entries/s)."""
LATENCY_P99_VS_RAW_AT = {10_000: 2.0}
"""edged's p99 over raw's at these offered rates."""
STARTUP_MEDIAN_S = {"--help": 0.2, "pending": 0.3}
"""Median wall time of ``edged <command>``, by the command's first word."""
IDLE_RSS = 40 * MIB
GROWTH_RSS = 10 * MIB


@dataclass(frozen=True)
class Verdict:
    target: str
    met: bool | None
    """None when the figure is missing (a failed run): neither met nor missed."""

    def cell(self) -> str:
        if self.met is None:
            return f"{self.target}: n/a"
        return f"{self.target}: {'met' if self.met else 'MISSED'}"

    def to_json(self) -> dict[str, object]:
        return {"target": self.target, "met": self.met}


def at_least(value: float | None, bound: float, target: str) -> Verdict:
    return Verdict(target, None if value is None else value >= bound)


def at_most(value: float | None, bound: float, target: str) -> Verdict:
    return Verdict(target, None if value is None else value <= bound)


def throughput(handler: str, concurrency: int, vs_raw: float | None) -> Verdict | None:
    bound = THROUGHPUT_VS_RAW.get((handler, concurrency))
    return None if bound is None else at_least(vs_raw, bound, f">= {bound:.2f}x raw")


def latency(rate: int, p99_ms: float | None, raw_p99_ms: float | None) -> Verdict | None:
    if (limit := LATENCY_P99_MS_AT.get(rate)) is not None:
        return at_most(p99_ms, limit, f"p99 <= {limit:g} ms")
    if (factor := LATENCY_P99_VS_RAW_AT.get(rate)) is not None:
        target = f"p99 <= {factor:g}x raw's"
        if p99_ms is None or raw_p99_ms is None:
            return Verdict(target, None)
        return at_most(p99_ms, factor * raw_p99_ms, target)
    return None


def startup(command: str, median_s: float | None) -> Verdict | None:
    limit = STARTUP_MEDIAN_S.get(command)
    return None if limit is None else at_most(median_s, limit, f"median <= {limit:g} s")


def idle_rss(rss: int | None) -> Verdict:
    return at_most(rss, IDLE_RSS, f"<= {IDLE_RSS // MIB} MiB")


def rss_growth(rss: int | None, idle: int | None) -> Verdict:
    target = f"<= idle + {GROWTH_RSS // MIB} MiB"
    if rss is None or idle is None:
        return Verdict(target, None)
    return at_most(rss - idle, GROWTH_RSS, target)
