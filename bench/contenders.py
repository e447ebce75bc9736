"""The three contenders: how each is started and how its drain of a preloaded backlog is timed."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from bench.consumer import Consumer, ContenderFailed, Result, measure_drain
from bench.faststream_consumer import describe

GROUP = "bench"
CONSUMER = "bench-1"


@dataclass(frozen=True)
class Settings:
    url: str
    timeout: float


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def edged_exe() -> str:
    # The console script sits next to the interpreter in the venv the benchmark runs from.
    exe = Path(sys.executable).parent / "edged"
    if not exe.exists():
        raise ContenderFailed(f"{exe} not found")
    return str(exe)


def edged_argv(settings: Settings, config: Path) -> list[str]:
    return [edged_exe(), "start", "-c", str(config), "--url", settings.url]


HANDLERS = {
    "async": '"bench.handlers:noop"',
    "sync": '"bench.handlers:noop_sync"',
    "exec": '{ exec = ["/bin/true"], timeout = "60s" }',
    "latency": '"bench.handlers:latency"',
}
"""The ``handler`` value of each edged variant, as TOML."""


def edged_config(directory: Path, stream: str, concurrency: int, handler: str = "async") -> Path:
    path = directory / f"{stream.replace(':', '_')}.toml"
    path.write_text(
        "[daemon]\n"
        f'consumer = "{CONSUMER}"\n'
        'listen = ""\n'
        "\n"
        "[[streams]]\n"
        f'stream = "{stream}"\n'
        f'group = "{GROUP}"\n'
        f"handler = {HANDLERS[handler]}\n"
        f"concurrency = {concurrency}\n"
        'start-id = "0"\n'
    )
    return path


def run_edged(
    client: redis.Redis,
    settings: Settings,
    entries: int,
    concurrency: int,
    workdir: Path,
    handler: str = "async",
) -> Result:
    stream = f"bench:edged:{handler}:{concurrency}"
    label = f"concurrency={concurrency}" + ("" if handler == "async" else f", {handler} handler")
    extra = {"concurrency": concurrency, "handler": handler}
    result = Result("edged", label, entries, extra=extra)

    def record_rss(consumer: Consumer) -> None:
        result.extra["rss_after_run"] = psutil.Process(consumer.pid).memory_info().rss

    try:
        argv = edged_argv(settings, edged_config(workdir, stream, concurrency, handler))
    except ContenderFailed as exc:
        result.error = str(exc)
        return result
    return measure_drain(
        client,
        result,
        stream=stream,
        group=GROUP,
        argv=argv,
        timeout=settings.timeout,
        on_drained=record_rss,
    )


def run_raw(client: redis.Redis, settings: Settings, entries: int, count: int,
            same_count_as: int | None = None) -> Result:
    """The raw loop; ``same_count_as``: a comparison row for edged at that concurrency (its
    COUNT is that concurrency), not the headline raw row."""
    stream = "bench:raw:1"
    argv = python_module(
        "bench.raw",
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
    )
    result = Result("raw", f"COUNT {count}, 1 XACK per batch", entries)
    if same_count_as is not None:
        result.extra["same_count_as"] = same_count_as
    return measure_drain(client, result, stream=stream, group=GROUP, argv=argv, timeout=settings.timeout)


def run_faststream(client: redis.Redis, settings: Settings, entries: int, mode: str, count: int) -> Result:
    stream = f"bench:faststream:{mode}"
    argv = python_module(
        "bench.faststream_consumer",
        "--url",
        settings.url,
        "--stream",
        stream,
        "--group",
        GROUP,
        "--consumer",
        CONSUMER,
        "--mode",
        mode,
        "--count",
        str(count),
    )
    result = Result("FastStream", describe(mode, count), entries)
    return measure_drain(client, result, stream=stream, group=GROUP, argv=argv, timeout=settings.timeout)


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="edged-bench-cfg-")


def run_faststream_bounded(
    client: redis.Redis,
    settings: Settings,
    entries: int,
    probe: int,
    mode: str,
    count: int,
    allow_full: bool = True,
) -> Result:
    """FastStream on ``probe`` entries first; on all ``entries`` only if that fits the budget.

    FastStream's per-message mode runs at a few thousand entries/s, so a full-size drain could
    outlast the timeout. The rate of a backlog drain does not depend on the backlog's size, so
    the probe's rate stands in when the full run would take more than half the timeout (or
    always, without ``allow_full``: ``--quick``).
    """
    if probe <= 0 or probe >= entries:
        return run_faststream(client, settings, entries, mode, count)
    first = run_faststream(client, settings, probe, mode, count)
    if first.rate is None:
        return first
    projected = entries / first.rate
    if not allow_full:
        first.notes.append(f"probe of {probe} entries only (--quick)")
        return first
    if projected > settings.timeout / 2:
        first.notes.append(f"full {entries} entries would take ~{projected:.0f} s: ran {probe}")
        return first
    return run_faststream(client, settings, entries, mode, count)
