"""How long a degraded stream takes to resume once its cause is fixed.

One `edged start` daemon reads two streams; the key of one is a string (WRONGTYPE), so that
stream is degraded while the other runs. After it has been degraded for each of several spans
(its retry backoff grows meanwhile, up to its cap) the key is deleted, and the time until the
daemon's `/readyz` answers 200 again is measured (polled every 20 ms).

    python -m bench.resume [--spans 2,10,30]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from bench.server import find_binary, running_server

POLL = 0.02


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", default="2,10,30",
                        help="seconds the stream stays degraded before the fix, comma-separated")
    parser.add_argument("--server", default=None)
    args = parser.parse_args()
    spans = [float(x) for x in args.spans.split(",")]
    port = _free_port()
    with running_server(find_binary(args.server)) as server, tempfile.TemporaryDirectory() as tmp:
        r = redis.Redis.from_url(server.url)
        config = Path(tmp) / "resume.toml"
        config.write_text(
            f'[daemon]\nconsumer = "resume"\nlisten = "127.0.0.1:{port}"\n'
            '[[streams]]\nstream = "bench:ok"\nhandler = "edged.handlers:log"\n'
            '[[streams]]\nstream = "bench:broken"\nhandler = "edged.handlers:log"\n'
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        r.set("bench:broken", "not a stream")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edged", "start", "-c", str(config), "--url", server.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        try:
            for span in spans:
                _wait(lambda: "degraded" in _readyz(port)[1], 30, "the stream to degrade")
                time.sleep(span)  # degraded this long: the retry backoff grows meanwhile
                r.delete("bench:broken")
                fixed = time.monotonic()
                _wait(lambda: _readyz(port)[0] == 200, 60, "the stream to resume")
                took = time.monotonic() - fixed
                print(f"degraded for {span:.0f}s (WRONGTYPE), then fixed: resumed {took:.2f}s "
                      "after the fix")
                r.delete("bench:broken")
                r.set("bench:broken", "not a stream")  # break it again for the next span
        finally:
            daemon.terminate()
            daemon.wait(30)


if __name__ == "__main__":
    main()
