"""The three contenders: how each is started, and edged's extra memory measurements."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from bench.consumer import Consumer, ContenderFailed, Result, measure_drain, wait_for
from bench.faststream_consumer import describe
from bench.stream import fresh_stream

GROUP = "bench"
CONSUMER = "bench-1"
IDLE_SETTLE = 2.0


@dataclass(frozen=True)
class Settings:
    url: str
    timeout: float


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _edged_argv(settings: Settings, config: Path) -> list[str]:
    # The console script sits next to the interpreter in the venv the benchmark runs from.
    exe = Path(sys.executable).parent / "edged"
    if not exe.exists():
        raise ContenderFailed(f"{exe} not found")
    return [str(exe), "start", "-c", str(config), "--url", settings.url]


def _edged_config(directory: Path, stream: str, concurrency: int) -> Path:
    path = directory / f"{stream.replace(':', '_')}.toml"
    path.write_text(
        "[daemon]\n"
        f'consumer = "{CONSUMER}"\n'
        'listen = ""\n'
        "\n"
        "[[streams]]\n"
        f'stream = "{stream}"\n'
        f'group = "{GROUP}"\n'
        'handler = "bench.handlers:noop"\n'
        f"concurrency = {concurrency}\n"
        'start-id = "0"\n'
    )
    return path


def run_edged(
    client: redis.Redis, settings: Settings, entries: int, concurrency: int, workdir: Path
) -> Result:
    stream = f"bench:edged:{concurrency}"
    result = Result("edged", f"concurrency={concurrency}", entries, extra={"concurrency": concurrency})

    def record_rss(consumer: Consumer) -> None:
        result.extra["rss_after_run"] = psutil.Process(consumer.pid).memory_info().rss

    try:
        argv = _edged_argv(settings, _edged_config(workdir, stream, concurrency))
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


def edged_idle_rss(client: redis.Redis, settings: Settings, concurrency: int, workdir: Path) -> int:
    """RSS of a daemon on an empty stream, ``IDLE_SETTLE`` s after its consumer first read."""
    stream = "bench:edged:idle"
    fresh_stream(client, stream, GROUP, 0)
    consumer = Consumer(_edged_argv(settings, _edged_config(workdir, stream, concurrency)))
    try:
        # The first XREADGROUP registers the consumer: only then is the daemon really up.
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
        rss: int = psutil.Process(consumer.pid).memory_info().rss
        return rss
    finally:
        consumer.stop()
        client.delete(stream)


def run_raw(client: redis.Redis, settings: Settings, entries: int, count: int) -> Result:
    stream = "bench:raw:1"
    argv = _python_module(
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
    return measure_drain(client, result, stream=stream, group=GROUP, argv=argv, timeout=settings.timeout)


def run_faststream(client: redis.Redis, settings: Settings, entries: int, mode: str, count: int) -> Result:
    stream = f"bench:faststream:{mode}"
    argv = _python_module(
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
    client: redis.Redis, settings: Settings, entries: int, probe: int, mode: str, count: int
) -> Result:
    """FastStream on ``probe`` entries first; on all ``entries`` only if that fits the budget.

    FastStream's per-message mode runs at a few thousand entries/s, so a full-size drain could
    outlast the timeout. The rate of a backlog drain does not depend on the backlog's size, so
    the probe's rate stands in when the full run would take more than half the timeout.
    """
    if probe <= 0 or probe >= entries:
        return run_faststream(client, settings, entries, mode, count)
    first = run_faststream(client, settings, probe, mode, count)
    if first.rate is None:
        return first
    projected = entries / first.rate
    if projected > settings.timeout / 2:
        first.notes.append(f"full {entries} entries would take ~{projected:.0f} s: ran {probe}")
        return first
    return run_faststream(client, settings, entries, mode, count)
