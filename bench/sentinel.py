"""``python -m bench.sentinel``: failover and CLI times under Sentinel with a bad sentinel.

A primary, a replica and three sentinels (down-after 1 s), all on loopback (the tests' own
tests/sentinel_cluster.py), and one ``edged start`` daemon. For each case (all sentinels up;
the first-listed one SIGKILLed; the first-listed one SIGSTOPped, i.e. hung) it times:

* ``edged publish`` through the sentinels (median of ``--cli-runs`` fresh processes);
* the failover: the primary is SIGKILLed, and an entry is added to the promoted replica every
  20 ms from the moment a sentinel that runs names it; the times from the kill to that
  promotion (the sentinels' part) and to the first entry the daemon's handler starts are
  reported.

Each case runs on a fresh cluster. Progress on stderr, the table on stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from bench.table import render
from tests.sentinel_cluster import SERVICE, SentinelCluster, write_sentinel_config
from tests.servers import Server, free_port
from tests.support import DaemonProcess, run_edged, test_env, wait_for

CASES = ("all up", "first dead", "first hung")
DEADLINE = 60.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _publish_times(config: Path, stream: str, runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        result = run_edged("publish", stream, '{"n": 0}', "-c", str(config), env=env, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"edged publish failed: {result.stderr.strip()}")
        times.append(time.monotonic() - started)
    return times


def _failover(cluster: SentinelCluster, live: int, daemon: DaemonProcess,
              recorder: redis.Redis, stream: str) -> tuple[float, float]:
    """Seconds from the kill to the promotion, and to the first entry the handler started."""
    old = cluster.primary()
    old.kill()
    killed_wall = time.time()
    sentinel = cluster.sentinels[live].client()

    def promoted() -> int | None:
        addr = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
        port = int(addr[1]) if addr else None
        return port if port not in (None, old.port) else None

    port = int(wait_for(promoted, DEADLINE, interval=0.02, what="a promotion"))
    promoted_after = time.time() - killed_wall
    with cluster.servers[port].client() as primary:
        def first_started() -> float | None:
            primary.xadd(stream, {"payload": b'{"n": 1}'})
            marks = recorder.lrange(f"{stream}:started", 0, -1)
            after = [float(m.split()[-1]) for m in marks if float(m.split()[-1]) > killed_wall]
            return min(after) if after else None

        first = float(wait_for(first_started, DEADLINE, interval=0.02,
                               what=lambda: f"an entry handled:\n{daemon.output()[-3000:]}"))
    return promoted_after, first - killed_wall


def run_case(case: str, workdir: Path, recorder: Server, cli_runs: int) -> dict[str, object]:
    cluster = SentinelCluster(workdir / case.replace(" ", "-"))
    cluster.start()
    try:
        stream = f"bs:{uuid.uuid4().hex[:8]}"
        config = write_sentinel_config(
            workdir / f"{case.replace(' ', '-')}.toml", cluster,
            [{"stream": stream, "handler": "tests.handlers:record_timed", "start-id": "0",
              "claim-idle": "1500ms", "claim-interval": "200ms"}],
            daemon={"consumer": f"bs-{uuid.uuid4().hex[:6]}", "shutdown-grace": "5s"})
        env = test_env(EDGED_TEST_REDIS=recorder.url, EDGED_TEST_CONSUMER="bench")
        daemon = DaemonProcess(config, None, workdir / f"{case.replace(' ', '-')}.log", env=env)
        try:
            daemon.wait_ready(DEADLINE)
            if case == "first dead":
                cluster.sentinels[0].stop()
                cluster.paused.add(0)  # the views skip it, as a paused one
            elif case == "first hung":
                cluster.pause_sentinel(0)
            times = _publish_times(config, stream, cli_runs, env)
            with recorder.client() as rec:
                promoted, took = _failover(cluster, 1, daemon, rec, stream)
        finally:
            daemon.stop()
    finally:
        cluster.stop()
    return {"case": case, "publish_median": statistics.median(times), "publish_max": max(times),
            "promoted": promoted, "failover": took}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sentinel", description=__doc__)
    p.add_argument("--cli-runs", type=int, default=5)
    p.add_argument("--repeat", type=int, default=1, help="failovers per case")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edged-bench-sentinel-") as tmp:
        recorder = Server(port=free_port(), data_dir=Path(tmp) / "recorder").start()
        try:
            for case in CASES:
                for _ in range(args.repeat):
                    log(f"case: {case}")
                    row = run_case(case, Path(tmp), recorder, args.cli_runs)
                    log(f"  {row}")
                    rows.append(row)
        finally:
            recorder.stop()
    print("\n".join(render(
        ["sentinels", "edged publish median s", "max s", "kill -> promoted s",
         "kill -> first entry s"],
        [[str(r["case"]), f"{r['publish_median']:.2f}", f"{r['publish_max']:.2f}",
          f"{r['promoted']:.2f}", f"{r['failover']:.2f}"] for r in rows], {1, 2, 3, 4})))
    print("Sentinels: three, down-after 1 s, quorum 2, on loopback; the first-listed one is the "
          "one made dead (SIGKILL) or hung (SIGSTOP).")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
