"""`edged pause` / `edged resume` (issue "The operator's day", finding 8): every daemon reading
the stream stops reading it within a heartbeat interval, lets running handlers finish, says so
in `edged status` and /metrics, stays ready; resumed, it reads what came meanwhile."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from tests.servers import Server, free_port
from tests.support import DaemonProcess, Fleet, run_edged, wait_for
from tests.test_health import add, get, metric, scrape


def _beat(r: redis.Redis, consumer: str) -> float:
    return float(r.hget(f"edged:daemon:{consumer}", "beat") or 0)


def test_pause_stops_reading_lets_running_work_finish_and_resume_reads_the_rest(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    port = free_port()
    d = Fleet(server.url, tmp_path, spawned).start(
        "pauser", [{"stream": stream, "handler": "tests.handlers:record", "start-id": "0"}],
        listen=f"127.0.0.1:{port}", **{"heartbeat-interval": "200ms"})
    d.wait_ready()
    url = ["--url", server.url]
    slow = add(r, stream, {"sleep": 1.5})
    wait_for(lambda: r.llen(f"{stream}:started") == 1, what="the slow entry started")

    out = run_edged("pause", stream, "--reason", "maintenance", *url)
    assert out.returncode == 0 and f"paused {stream}/edged" in out.stdout, out.stderr
    d.wait_output(f"stream {stream} (edged): paused")

    def status() -> dict:  # type: ignore[type-arg]
        out = run_edged("status", *url, "--json", "--sample", "0s")
        return next(x for x in json.loads(out.stdout)["daemons"] if x["consumer"] == "pauser")

    wait_for(lambda: status()["paused"] == [f"{stream}/edged"], 10, what="status shows PAUSED")
    wait_for(lambda: slow in {m.decode().split()[0] for m in r.lrange(f"{stream}:handled", 0, -1)},
             10, what="the handler that ran when paused finished")
    later = [add(r, stream, {"n": i}) for i in range(3)]
    published_beat = _beat(r, "pauser")
    # Several beats (each one a look at the pause flag, and ample time for a reader) pass...
    wait_for(lambda: _beat(r, "pauser") > published_beat + 1.0, 10, what="five more beats")
    # ...and nothing new was read.
    assert r.llen(f"{stream}:started") == 1
    assert r.xinfo_groups(stream)[0]["lag"] == 3
    m = scrape(port)
    assert metric(m, "edged_stream_paused", stream=stream, group="edged") == 1
    assert get(port, "/readyz")[0] == 200, "a paused stream is no reason to be unready"
    out = run_edged("status", *url, "--sample", "0s")
    assert f"PAUSED pauser {stream}/edged" in out.stdout

    out = run_edged("resume", stream, *url)
    assert out.returncode == 0 and f"resumed {stream}/edged" in out.stdout
    wait_for(lambda: {m.decode().split()[0] for m in r.lrange(f"{stream}:handled", 0, -1)}
             >= set(later), 20, what="the entries published while paused handled")
    assert metric(scrape(port), "edged_stream_paused", stream=stream, group="edged") == 0
