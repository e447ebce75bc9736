"""The throughput section: each contender drains a preloaded backlog, one row per run."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import redis

from bench import contenders
from bench.consumer import Result

_STARTED = time.monotonic()


def log(message: str) -> None:
    # Progress goes to stderr so that stdout holds only the table (or the JSON).
    print(f"[{time.monotonic() - _STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


def log_result(result: Result) -> None:
    if result.error is not None:
        log(f"  failed: {result.error}")
    else:
        log(f"  {result.measured} entries in {result.seconds:.2f} s: {result.rate:,.0f}/s")


def _edged_runs(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """``(handler, concurrency, entries)`` of every edged row, in order."""
    runs = [("async", c, args.entries) for c in args.edged_concurrency]
    runs += [("sync", c, args.sync_entries) for c in args.sync_concurrency]
    runs += [("exec", c, args.exec_entries) for c in args.exec_concurrency]
    return runs


def _exec_note(result: Result) -> None:
    if result.rate:
        slot_ms = result.extra["concurrency"] * 1000 / result.rate
        result.notes.append(
            f"/bin/true: {1e6 / result.rate:,.0f} µs of wall time per entry; each of the "
            f"{result.extra['concurrency']} slots spends {slot_ms:.2f} ms per entry (spawn, wait, reap)"
        )


def run(
    client: redis.Redis, settings: contenders.Settings, args: argparse.Namespace, workdir: Path
) -> tuple[list[Result], list[str]]:
    """Every throughput row the arguments ask for, and the notes describing the contenders."""
    results: list[Result] = []
    notes: list[str] = []
    wanted = set(args.contenders)

    def record(result: Result) -> None:
        results.append(result)
        log_result(result)

    if "raw" in wanted:
        log(f"raw: {args.entries} entries")
        record(contenders.run_raw(client, settings, args.entries, args.count))
        notes.append(
            "raw: redis.asyncio + hiredis, XREADGROUP COUNT/BLOCK 1000 then one XACK of the "
            "batch's ids, sequentially, no decoding."
        )
        if "edged" in wanted:
            # edged may hold at most `concurrency` entries, so each read asks for at most that
            # many: the same loop reading as few per round trip shows what that bound costs.
            for c in sorted({c for c in args.edged_concurrency if c < args.count}):
                log(f"raw at COUNT {c} (edged's concurrency): {args.entries} entries")
                record(contenders.run_raw(client, settings, args.entries, c, same_count_as=c))
            notes.append(
                "edged/raw same COUNT: against the raw loop reading COUNT = edged's concurrency, "
                "the most entries edged may hold (same run)."
            )
    if "faststream" in wanted:
        for mode in args.faststream_modes:
            if args.quick and mode == "batch":
                log(f"FastStream {mode}: {args.entries} entries")
            else:
                then = "" if args.quick else " (then maybe full N)"
                log(f"FastStream {mode}: {args.faststream_entries} entries{then}")
            # --quick: batch mode drains N at about raw's pace, so it runs on N at once; the
            # per-entry modes, a few thousand entries/s, only on the probe.
            probe = 0 if args.quick and mode == "batch" else args.faststream_entries
            record(
                contenders.run_faststream_bounded(
                    client, settings, args.entries, probe, mode, args.count, allow_full=not args.quick
                )
            )
        notes += [
            "FastStream: RedisBroker(logger=None, apply_types=False), StreamSub(stream, group, "
            "consumer, polling_interval=1000, <settings>),",
            "  ack_policy=AckPolicy.ACK: XACK after the handler returns (per entry, or per "
            "batch with batch=True); every entry ends acked.",
        ]
    if "edged" in wanted:
        for handler, concurrency, entries in _edged_runs(args):
            log(f"edged {handler} concurrency={concurrency}: {entries} entries")
            record(contenders.run_edged(client, settings, entries, concurrency, workdir, handler))
            if handler == "exec":
                _exec_note(results[-1])
        notes.append(
            "edged handlers: async = bench.handlers:noop (awaited), sync = bench.handlers:noop_sync "
            '(on threads of the stream\'s own), exec = { exec = ["/bin/true"] } (a process per entry).'
        )
        if "raw" in wanted:
            # The host's load can move within a run: the raw loop again after the edged rows,
            # and every ratio against the faster of its two runs (a stumbling raw sample would
            # flatter edged).
            log(f"raw again, after edged: {args.entries} entries")
            again = contenders.run_raw(client, settings, args.entries, args.count)
            again.settings += " (again, after edged)"
            record(again)
            notes.append("edged/raw: against the faster of the two raw COUNT "
                         f"{args.count} runs, before and after the edged rows.")
    return results, notes
