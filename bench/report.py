"""The results as a text table or as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench.consumer import POLL_INTERVAL, Result

MIB = 1024 * 1024


@dataclass
class Report:
    server: str
    cpus: int
    results: list[Result]
    edged_idle_rss: int | None = None
    edged_idle_error: str | None = None
    edged_rss_concurrency: int | None = None
    settings_notes: list[str] = field(default_factory=list)

    def _best(self, contender: str, batch: bool | None = None) -> float | None:
        rates = [
            r.rate
            for r in self.results
            if r.contender == contender
            and r.rate
            and (batch is None or r.settings.startswith("batch=True") == batch)
        ]
        return max(rates, default=None)

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

    def rss_after_run(self) -> int | None:
        for r in self.results:
            if r.extra.get("concurrency") == self.edged_rss_concurrency:
                rss: int | None = r.extra.get("rss_after_run")
                return rss
        return None

    def to_json(self) -> str:
        rows = []
        for r in self.results:
            vs_raw, vs_fast, vs_batch = self.ratios(r)
            rows.append(
                {
                    "contender": r.contender,
                    "settings": r.settings,
                    "entries": r.entries,
                    "measured_entries": r.measured,
                    "seconds": r.seconds,
                    "entries_per_s": r.rate,
                    "startup_seconds": r.startup_seconds,
                    "edged_vs_raw": vs_raw,
                    "edged_vs_faststream": vs_fast,
                    "edged_vs_faststream_batch": vs_batch,
                    "error": r.error,
                    "notes": r.notes,
                    **r.extra,
                }
            )
        doc: dict[str, Any] = {
            "server": self.server,
            "cpus": self.cpus,
            "poll_interval_s": POLL_INTERVAL,
            "results": rows,
            "edged_rss": {
                "idle_bytes": self.edged_idle_rss,
                "idle_error": self.edged_idle_error,
                "after_run_bytes": self.rss_after_run(),
                "concurrency": self.edged_rss_concurrency,
            },
        }
        return json.dumps(doc, indent=2)

    def to_table(self) -> str:
        head = (
            "contender",
            "concurrency/settings",
            "entries",
            "seconds",
            "entries/s",
            "edged/raw",
            "edged/FastStream",
            "edged/FS batch",
            "start-up s",
        )
        rows: list[tuple[str, ...]] = []
        failures: dict[int, str] = {}
        for i, r in enumerate(self.results):
            if r.error is not None:
                failures[i] = f"failed: {r.error}"
                rows.append((r.contender, r.settings, f"{r.entries}"))
                continue
            vs_raw, vs_fast, vs_batch = self.ratios(r)
            rows.append(
                (
                    r.contender,
                    r.settings,
                    f"{r.entries}",
                    _num(r.seconds, ".2f"),
                    _num(r.rate, ",.0f"),
                    _ratio(vs_raw),
                    _ratio(vs_fast),
                    _ratio(vs_batch),
                    _num(r.startup_seconds, ".2f"),
                )
            )
        widths = [max(len(h), *(len(row[c]) for row in rows if c < len(row))) for c, h in enumerate(head)]
        numeric = {2, 3, 4, 5, 6, 7, 8}

        def line(cells: tuple[str, ...]) -> str:
            out = [c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)]
            return "  ".join(out).rstrip()

        lines = [line(head), "  ".join("-" * w for w in widths)]
        for i, row in enumerate(rows):
            text = line(row)
            lines.append(f"{text}  {failures[i]}" if i in failures else text)
        lines.append("")
        lines.extend(self._footer())
        return "\n".join(lines)

    def _footer(self) -> list[str]:
        ms = POLL_INTERVAL * 1000
        out = [
            f"Server: {self.server} on 127.0.0.1, {self.cpus} CPUs shared by server and consumer.",
            f"Timed window: XINFO GROUPS is polled every {ms:.0f} ms; it opens at the first poll "
            "showing deliveries (t0, c0 entries already read)",
            "and closes at the first showing all N read and 0 pending (t1); entries/s = "
            "(N - c0) / (t1 - t0). Process start-up ('start-up s')",
            "is outside the window for every contender. edged/FastStream compares with FastStream's "
            "per-entry mode (one handler call",
            "and one XACK per entry, as edged); edged/FS batch with its batch mode (one call and one "
            "XACK per list of up to 500).",
            *self.settings_notes,
        ]
        idle = _mib(self.edged_idle_rss) if self.edged_idle_rss else self.edged_idle_error
        after = self.rss_after_run()
        if idle is not None or after is not None:
            c = self.edged_rss_concurrency
            out.append(
                f"edged RSS: idle {idle or 'n/a'} (concurrency {c}, empty stream, 2 s after its "
                f"first read); after the concurrency-{c} drain {_mib(after) if after else 'n/a'}."
            )
        for r in self.results:
            out.extend(f"Note ({r.contender} {r.settings}): {n}" for n in r.notes)
        return out


def _num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f} MiB"
