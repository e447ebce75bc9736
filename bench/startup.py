"""Wall time of short ``edged`` commands, each in a fresh process, hyperfine-style.

Each command runs once untimed (warms the page cache and writes bytecode caches, as hyperfine's
``--warmup 1`` and an installed package), then
``runs`` times, timed around ``subprocess.run`` with ``time.perf_counter``: interpreter start,
imports, the command, exit. Output goes to /dev/null. ``edged pending`` reads a stream set up
here with a group and a few pending entries, on the benchmark's server.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.consumer import REPO_ROOT, ContenderFailed
from bench.contenders import GROUP, edged_exe

STREAM = "bench:cli"
PENDING = 3


@dataclass
class Timing:
    command: str
    """As shown: ``edged`` and its arguments, the server URL elided."""
    key: str
    """The target's key: ``--help``, ``--version`` or ``pending``."""
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def min(self) -> float | None:
        return min(self.times, default=None)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def summary(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "runs": len(self.times),
            "min_s": self.min,
            "median_s": self.median,
            "mean_s": statistics.fmean(self.times) if self.times else None,
            "max_s": max(self.times, default=None),
            "error": self.error,
        }


def _prepare(client: redis.Redis) -> None:
    client.delete(STREAM)
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    for n in range(PENDING + 2):
        client.xadd(STREAM, {"payload": f'{{"n":{n}}}'})
    # Read, never acked: PENDING entries pending for one consumer, 2 never delivered.
    client.xreadgroup(GROUP, "bench-cli", {STREAM: ">"}, count=PENDING)


def _installed_env() -> dict[str, str]:
    """The environment, as on a host where edged was installed: with bytecode caches. pip
    writes them for an installed package; a checkout gets them from the warm-up run. Without
    this, PYTHONDONTWRITEBYTECODE (set in some shells and CI images) would have every run
    compile edged from source and time the compiler."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _time(argv: list[str], timing: Timing, runs: int) -> None:
    env = _installed_env()
    for i in range(runs + 1):
        start = time.perf_counter()
        proc = subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT, env=env,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            timing.error = f"exit code {proc.returncode}: {tail[0][:120]}"
            return
        if i > 0:  # the first run only warms up
            timing.times.append(elapsed)


def run(client: redis.Redis, url: str, runs: int) -> list[Timing]:
    try:
        exe = edged_exe()
    except ContenderFailed as exc:
        return [Timing("edged", "edged", error=str(exc))]
    _prepare(client)
    commands = [
        ("edged --help", "--help", [exe, "--help"]),
        ("edged --version", "--version", [exe, "--version"]),
        (
            f"edged pending {STREAM} --group {GROUP} --url <server>",
            "pending",
            [exe, "pending", STREAM, "--group", GROUP, "--url", url],
        ),
    ]
    timings = []
    try:
        for shown, key, argv in commands:
            timing = Timing(shown, key)
            _time(argv, timing, runs)
            timings.append(timing)
    finally:
        client.delete(STREAM)
    return timings
