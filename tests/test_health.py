"""The daemon's HTTP endpoints (/metrics, /healthz, /readyz) and `edged check`.

Real `edged start` subprocesses against a real server: what /metrics reports is compared with
what Redis and the recording handler say, and the endpoints are asked while Redis is away.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Server, free_port
from tests.support import DaemonProcess, run_edged, wait_for, write_config
from tests.support import test_env as edged_env

GROUP = "edged"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --------------------------------------------------------------------------- helpers



def start_daemon(spawned: list[DaemonProcess], tmp_path: Path, streams: list[dict[str, Any]],
                 url: str, record_url: str, port: int,
                 name: str = "d") -> tuple[DaemonProcess, Path]:
    consumer = f"host-{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / f"{name}.toml", streams,
                       daemon={"consumer": consumer, "listen": f"127.0.0.1:{port}"})
    env = edged_env(EDGED_TEST_REDIS=record_url, EDGED_TEST_CONSUMER=consumer)
    d = DaemonProcess(cfg, url, tmp_path / f"{name}.log", env=env)
    spawned.append(d)
    return d, cfg


def stream_cfg(stream: str, **extra: Any) -> dict[str, Any]:
    return {"stream": stream, "group": GROUP, "handler": "tests.handlers:record",
            "start-id": "0", **extra}


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


def answers(port: int) -> bool:
    try:
        get(port, "/healthz")
    except OSError:
        return False
    return True


def scrape(port: int) -> Samples:
    status, text = get(port, "/metrics")
    assert status == 200, text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def add(r: redis.Redis, stream: str, body: dict[str, Any]) -> str:
    return r.xadd(stream, {"payload": json.dumps(body)}).decode()


def group_info(r: redis.Redis, stream: str) -> dict[str, Any]:
    return next(g for g in r.xinfo_groups(stream) if g["name"] == GROUP.encode())


# --------------------------------------------------------------------------- tests


def test_metrics_match_redis_while_running(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """Stream A gets 10 good entries, 3 the handler rejects and 2 that fail with
    max-deliveries 1 (so they are dead-lettered at once); stream B (concurrency 1) gets 3 that
    hang. Then /metrics must say: acked 10 and dead-lettered 5 on A, equal to what the handler
    recorded, to XLEN of A's dead-letter stream and to edged_dead_letter_entries; failed 2;
    15 handler runs in the histogram; lag and pending of both groups equal to XINFO GROUPS
    (B: 1 pending, 2 lagging); an oldest pending age on B; Redis up, no failover. /healthz,
    /readyz answer 200, `edged check` exits 0, other paths 404 and other methods 405. Once B's
    entries are released its gauges go to 0."""
    slow = f"{stream}:slow"
    port = free_port()
    d, cfg = start_daemon(spawned, tmp_path, [stream_cfg(stream, **{"max-deliveries": 1}),
                                         stream_cfg(slow, concurrency=1)],
                     server.url, server.url, port)
    d.wait_ready()
    published = time.time()
    for i in range(10):
        add(r, stream, {"n": i})
    for _ in range(3):
        add(r, stream, {"reject": "no"})
    for _ in range(2):
        add(r, stream, {"fail": True})
    for _ in range(3):
        add(r, slow, {"hang": True})
    a = {"stream": stream, "group": GROUP}
    b = {"stream": slow, "group": GROUP}

    def settled() -> Samples | None:
        m = scrape(port)
        done = (metric(m, "edged_messages_total", outcome="acked", **a) == 10
                and metric(m, "edged_messages_total", outcome="dead_lettered", **a) == 5
                and metric(m, "edged_in_flight", **b) == 1)
        return m if done else None

    wait_for(settled, what=f"counters settled; log:\n{d.output()}")

    def gauges_match() -> Samples | None:
        m = scrape(port)
        ga, gb = group_info(r, stream), group_info(r, slow)
        ok = (metric(m, "edged_group_pending", **a) == ga["pending"] == 0
              and metric(m, "edged_group_lag", **a) == ga["lag"] == 0
              and metric(m, "edged_dead_letter_entries", **a) == r.xlen(f"{stream}:dead") == 5
              and metric(m, "edged_dead_letter_entries", **b) == 0
              and metric(m, "edged_group_pending", **b) == gb["pending"] == 1
              and metric(m, "edged_group_lag", **b) == gb["lag"] == 2)
        return m if ok else None

    m = wait_for(gauges_match, timeout=15, what=f"group gauges equal to XINFO GROUPS: {scrape(port)}")
    assert len(r.lrange(f"{stream}:handled", 0, -1)) == 10
    assert r.xlen(f"{stream}:dead") == 5
    assert metric(m, "edged_messages_total", outcome="failed", **a) == 2
    assert metric(m, "edged_messages_total", outcome="stale_ack", **a) == 0
    assert metric(m, "edged_handler_seconds_count", **a) == 15
    assert metric(m, "edged_handler_seconds_bucket", le="+Inf", **a) == 15
    assert metric(m, "edged_handler_seconds_count", **b) == 0
    age = metric(m, "edged_group_oldest_pending_age_seconds", **b)
    assert age is not None and 0 <= age <= time.time() - published + 5, age
    assert metric(m, "edged_group_oldest_pending_age_seconds", **a) == 0
    assert metric(m, "edged_redis_up") == 1
    assert metric(m, "edged_ready") == 1
    assert metric(m, "edged_failovers_total") == 0

    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ok\n")
    assert get(port, "/nope")[0] == 404
    assert get(port, "/metrics", method="POST")[0] == 405
    check = run_edged("check", "-c", str(cfg))
    assert check.returncode == 0, check.stderr

    r.set(f"{slow}:release", 1)
    wait_for(lambda: len(r.lrange(f"{slow}:handled", 0, -1)) == 3, what="hung entries released")
    wait_for(lambda: (lambda m: metric(m, "edged_group_pending", **b) == 0
                      and metric(m, "edged_group_lag", **b) == 0)(scrape(port)),
             timeout=15, what="B's gauges back to 0")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.output()


def test_not_ready_while_redis_is_unreachable(
    tmp_path: Path, stream: str, spawned: list[DaemonProcess]
) -> None:
    """The daemon points at a port where no server runs. The HTTP endpoints must answer
    anyway: /readyz 503 naming Redis, /healthz 200 (waiting for Redis is not being wedged),
    edged_redis_up 0, and `edged check` exits 1 with the reason. Once a server comes up on that
    port the daemon becomes ready and `edged check` exits 0."""
    redis_port, port = free_port(), free_port()
    srv = Server(port=redis_port, data_dir=tmp_path / "late")
    url = srv.url
    d, cfg = start_daemon(spawned, tmp_path, [stream_cfg(stream)], url, url, port)
    try:
        wait_for(lambda: answers(port) or d.proc.poll() is not None, what="HTTP up")
        status, body = get(port, "/readyz")
        assert status == 503 and "Redis unavailable" in body, (status, body)
        assert get(port, "/healthz") == (200, "ok\n")
        m = scrape(port)
        assert metric(m, "edged_redis_up") == 0 and metric(m, "edged_ready") == 0
        check = run_edged("check", "-c", str(cfg))
        assert check.returncode == 1, (check.returncode, check.stderr)
        assert "Redis unavailable" in check.stderr

        srv.start()
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=20,
                 what=f"ready once Redis is up; log:\n{d.output()}")
        check = run_edged("check", "-c", str(cfg))
        assert check.returncode == 0, check.stderr
        d.signal(signal.SIGTERM)
        assert d.wait_exit() == 0, d.output()
    finally:
        srv.stop()


def test_taken_http_port_stops_the_daemon_before_it_consumes(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """Another socket holds the listen port. The daemon must exit non-zero naming the address,
    without having created its group or run a handler for the entry already in the stream."""
    add(r, stream, {"n": 1})
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        d, _ = start_daemon(spawned, tmp_path, [stream_cfg(stream)], server.url, server.url, port)
        code = d.wait_exit()
    assert code != 0
    assert f"cannot listen on 127.0.0.1:{port}" in d.output(), d.output()
    assert r.xinfo_groups(stream) == []
    assert r.llen(f"{stream}:started") == 0


def test_check_exit_codes_without_a_daemon(tmp_path: Path) -> None:
    """`edged check`: 69 when nothing listens on the configured address, 78 when listen is
    empty or the config is not valid TOML; each with a line saying why."""
    port = free_port()
    cfg = write_config(tmp_path / "a.toml", [stream_cfg("s")],
                       daemon={"listen": f"127.0.0.1:{port}"})
    res = run_edged("check", "-c", str(cfg))
    assert res.returncode == 69 and f"127.0.0.1:{port}" in res.stderr, res

    off = write_config(tmp_path / "off.toml", [stream_cfg("s")])  # listen = ""
    res = run_edged("check", "-c", str(off))
    assert res.returncode == 78 and "listen is empty" in res.stderr, res

    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon\n")
    res = run_edged("check", "-c", str(bad))
    assert res.returncode == 78 and "invalid TOML" in res.stderr, res
