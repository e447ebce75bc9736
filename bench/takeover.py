"""Takeover time after SIGKILL with the default claim settings (claim-idle 60s, interval 5s).

Two `edged start` daemons share a stream; once the victim holds entries in flight it is
killed with SIGKILL, and the time until no pending entry is owned by it any more is measured
(XPENDING polled every 100 ms). Expect about claim-idle + up to claim-interval.

    python -m bench.takeover [--claim-idle 60s] [--claim-interval 5s]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

import redis

from bench.consumer import Consumer
from bench.server import find_binary, running_server


def _config(path: Path, stream: str, consumer: str, idle: str, interval: str) -> Path:
    path.write_text(
        f'[daemon]\nconsumer = "{consumer}"\nlisten = ""\n[[streams]]\nstream = "{stream}"\n'
        f'handler = "bench.handlers:slow"\nconcurrency = 16\nstart-id = "0"\n'
        f'claim-idle = "{idle}"\nclaim-interval = "{interval}"\n'
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claim-idle", default="60s")
    parser.add_argument("--claim-interval", default="5s")
    parser.add_argument("--server", default=None)
    args = parser.parse_args()
    exe = str(Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "edged")
    if not Path(exe).exists():
        exe = "edged"
    with running_server(find_binary(args.server)) as server, tempfile.TemporaryDirectory() as tmp:
        r = redis.Redis.from_url(server.url)
        stream = "bench:takeover"
        r.xgroup_create(stream, "edged", id="0", mkstream=True)
        daemons = {
            name: Consumer([exe, "start", "-c", str(_config(Path(tmp) / f"{name}.toml", stream,
                                                              name, args.claim_idle,
                                                              args.claim_interval)),
                            "--url", server.url])
            for name in ("victim", "survivor")
        }
        try:
            deadline = time.monotonic() + 30
            while r.xpending(stream, "edged")["pending"] == 0 or not any(
                c["name"] == b"victim" and c["pending"] > 0
                for c in r.xinfo_consumers(stream, "edged")
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("the victim never held entries")
                r.xadd(stream, {"payload": b"{}"})
                time.sleep(0.05)
            held = next(c["pending"] for c in r.xinfo_consumers(stream, "edged")
                        if c["name"] == b"victim")
            os.kill(daemons["victim"].pid, signal.SIGKILL)
            killed = time.monotonic()
            while any(c["name"] == b"victim" and c["pending"] > 0
                      for c in r.xinfo_consumers(stream, "edged")):
                time.sleep(0.1)
            took = time.monotonic() - killed
            print(f"claim-idle {args.claim_idle}, claim-interval {args.claim_interval}: "
                  f"{held} entries held by the killed daemon were taken over {took:.1f}s "
                  "after SIGKILL")
        finally:
            for c in daemons.values():
                c.stop()


if __name__ == "__main__":
    main()
