"""No single stream or Redis error stops more than itself; no outage ends the daemon.

Real daemons, real servers. One stream is broken the ways an operator or an ACL change breaks
it (its key is not a stream, at start and while running; the ACL user loses it): that stream
is degraded and says so everywhere (/readyz, /healthz, /metrics, `edged status`), the other
stream goes on, and the broken one resumes by itself once the cause is fixed. A server stopped
for longer than every background loop's tick leaves the daemon running.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from edged import acl
from tests.servers import Server, free_port
from tests.support import DaemonProcess, Fleet, run_edged, wait_for

HANDLER = "tests.handlers:record"


def stream_cfg(stream: str, **extra: Any) -> dict[str, Any]:
    return {"stream": stream, "handler": HANDLER, "start-id": "0", "concurrency": 2,
            "claim-idle": "1s", "claim-interval": "200ms", "retry-backoff": "100ms", **extra}


@pytest.fixture
def fleet(server: Server, tmp_path: Path, spawned: list[DaemonProcess]) -> Fleet:
    return Fleet(server.url, tmp_path, spawned)


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(port: int, name: str, stream: str) -> float | None:
    _, body = http(port, "/metrics")
    found = re.search(rf'^{name}{{[^}}]*stream="{re.escape(stream)}"[^}}]*}} (\S+)$', body, re.M)
    return float(found.group(1)) if found else None


def handled(r: redis.Redis, stream: str) -> int:
    return int(r.llen(f"{stream}:handled"))


def fail_read(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """Make the reader's ``at``-th read raise, as a reply edged cannot parse would (the one
    way to reach the supervisor's restart without breaking Redis itself)."""
    from edged.consume.reader import Reader

    real = Reader._read_once
    calls = {"n": 0}

    async def failing(self: Reader) -> Any:
        calls["n"] += 1
        if calls["n"] == at:
            raise RuntimeError("a reply edged does not understand")
        return await real(self)

    monkeypatch.setattr(Reader, "_read_once", failing)


def resume_seconds(output: str, stream: str) -> float:
    found = re.findall(rf"stream {re.escape(stream)} \(group edged\): resumed after ([\d.]+)s",
                       output)
    assert found, output
    return float(found[-1])


def test_a_key_that_is_not_a_stream_degrades_that_stream_only(
    server: Server, r: redis.Redis, fleet: Fleet
) -> None:
    """`bad` is a string when the daemon starts; `good` is a stream. Must hold: the daemon runs;
    `good` is consumed; `bad` is degraded with WRONGTYPE and the command named in /readyz (503),
    /healthz (200: a restart would not help), edged_stream_degraded and `edged status`, logged
    at ERROR once however often it is retried. Deleting the key fixes it: `bad` resumes by
    itself and its entries are handled. Then, while running, `bad` becomes a string again:
    degraded again, `good` unaffected; fixed again, resumed again."""
    good, bad = f"t:{uuid.uuid4().hex[:8]}", f"t:{uuid.uuid4().hex[:8]}"
    r.set(bad, "not a stream")
    port = free_port()
    daemon = fleet.start("sv1", [stream_cfg(good), stream_cfg(bad)],
                         listen=f"127.0.0.1:{port}", **{"heartbeat-interval": "200ms"})
    r.xadd(good, {"payload": b"{}"})
    wait_for(lambda: handled(r, good) == 1, what=lambda: f"good handled:\n{daemon.output()}")
    wait_for(lambda: metric(port, "edged_stream_degraded", bad) == 1, what="degraded metric")
    code, body = http(port, "/readyz")
    assert code == 503 and f"stream {bad} (edged): degraded" in body and "WRONGTYPE" in body
    assert "XGROUP CREATE" in body, body
    code, body = http(port, "/healthz")
    assert code == 200 and "degraded" in body and "WRONGTYPE" in body, body
    assert metric(port, "edged_stream_degraded", good) == 0
    status = run_edged("status", "--url", server.url, "--json")
    record = next(d for d in json.loads(status.stdout)["daemons"] if d["consumer"] == "sv1")
    assert "WRONGTYPE" in record["degraded"][f"{bad}/edged"], status.stdout
    assert not record["ready"]
    wait_for(lambda: (metric(port, "edged_stream_errors_total", bad) or 0) >= 3, what="retries")
    assert daemon.output().count("degraded: group failed") == 1, daemon.output()

    r.delete(bad)  # the fix
    wait_for(lambda: metric(port, "edged_stream_degraded", bad) == 0, 30, what="resumed")
    r.xadd(bad, {"payload": b"{}"})
    wait_for(lambda: handled(r, bad) == 1, what="bad stream's entry handled")
    wait_for(lambda: http(port, "/readyz")[0] == 200, what="ready again")
    first_resume = resume_seconds(daemon.output(), bad)

    r.delete(bad)
    r.set(bad, "a string again")  # while running: the reads fail now
    wait_for(lambda: metric(port, "edged_stream_degraded", bad) == 1, 30, what="degraded again")
    r.xadd(good, {"payload": b"{}"})
    wait_for(lambda: handled(r, good) == 2, what="good stream unaffected")
    r.delete(bad)
    r.xadd(bad, {"payload": b"{}"})
    wait_for(lambda: handled(r, bad) == 2, 30, what=lambda: f"resumed:\n{daemon.output()}")
    assert daemon.proc.poll() is None, daemon.output()
    print(f"resumed after {first_resume}s and {resume_seconds(daemon.output(), bad)}s")


def test_a_permission_revoked_by_acl_degrades_that_stream_only(
    server: Server, r: redis.Redis, fleet: Fleet, tmp_path: Path
) -> None:
    """The daemon's ACL user may read `a*` and `b*`; then `b*` is taken away (ACL SETUSER).
    Must hold: stream b is degraded with NOPERM, stream a goes on, the daemon runs; the
    permission given back, b resumes by itself and its entry is handled."""
    base = uuid.uuid4().hex[:8]
    a, b = f"a{base}", f"b{base}"
    user, password = f"u{base}", uuid.uuid4().hex
    keys_ok = f"~a{base}* ~b{base}* ~edged:*"
    r.execute_command("ACL", "SETUSER", *acl.setuser_args(user, password, keys_ok, acl.DAEMON))
    pw = tmp_path / "pw"
    pw.write_text(password)
    port = free_port()
    # The handler records with the test's own (default) user, so only edged's access changes.
    daemon = _start_as(fleet, "sv2", [stream_cfg(a), stream_cfg(b)], port, user, pw)
    daemon.wait_ready()
    r.execute_command("ACL", "SETUSER", user, "resetkeys", f"~a{base}*", "~edged:*")
    wait_for(lambda: metric(port, "edged_stream_degraded", b) == 1, 30,
             what=lambda: f"b degraded:\n{daemon.output()}")
    assert "NOPERM" in http(port, "/readyz")[1]
    r.xadd(a, {"payload": b"{}"})
    wait_for(lambda: handled(r, a) == 1, what="a goes on")
    r.execute_command("ACL", "SETUSER", user, f"~b{base}*")
    r.xadd(b, {"payload": b"{}"})
    wait_for(lambda: handled(r, b) == 1, 30, what=lambda: f"b resumed:\n{daemon.output()}")
    wait_for(lambda: metric(port, "edged_stream_degraded", b) == 0, what="b healthy")
    assert daemon.proc.poll() is None
    r.execute_command("ACL", "DELUSER", user)


def _start_as(fleet: Fleet, consumer: str, streams: list[dict[str, Any]], port: int, user: str,
              pw: Path) -> DaemonProcess:
    from tests.support import test_env, write_config

    cfg = write_config(fleet.tmp_path / f"{consumer}-acl.toml", streams,
                       daemon={"consumer": consumer, "listen": f"127.0.0.1:{port}"},
                       redis={"username": user, "password-file": str(pw)})
    env = test_env(EDGED_TEST_REDIS=fleet.url, EDGED_TEST_CONSUMER=consumer)
    d = DaemonProcess(cfg, fleet.url, fleet.tmp_path / f"{consumer}-acl.log", env=env)
    fleet.procs.append(d)
    return d


def test_an_outage_longer_than_every_background_tick(
    tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """A server of its own (AOF on) is killed while an entry is in flight and stays down for
    longer than the tick of every loop: heartbeat (200ms), dead-consumer clean-up (consumer-
    expiry 4s: 1s tick), group sampler (HTTP on), leases (claim-idle 1s: 250ms tick). Must
    hold: the daemon is still running when the server is back, says why it was not ready while
    it was away, finishes the entry in flight, handles a new one, and drains to nothing
    pending."""
    server = Server(port=free_port(), data_dir=tmp_path / "srv",
                    extra=["--appendonly", "yes", "--appendfsync", "always"]).start()
    try:
        r = server.client()
        stream = f"t:{uuid.uuid4().hex[:8]}"
        port = free_port()
        fleet = Fleet(server.url, tmp_path, spawned)
        daemon = fleet.start("sv3", [stream_cfg(stream)], listen=f"127.0.0.1:{port}",
                             **{"heartbeat-interval": "200ms", "consumer-expiry": "4s"})
        daemon.wait_ready()
        r.xadd(stream, {"payload": b'{"sleep": 3}'})
        wait_for(lambda: r.llen(f"{stream}:started") == 1, what="entry in flight")
        server.kill()
        wait_for(lambda: http(port, "/readyz")[0] == 503, what="not ready while away")
        assert "Redis unavailable" in http(port, "/readyz")[1]
        outage_end = time.monotonic() + 5  # > every tick above, and > the handler's sleep
        wait_for(lambda: daemon.proc.poll() is not None or time.monotonic() > outage_end, 10,
                 interval=0.1, what="the outage")
        assert daemon.proc.poll() is None, daemon.output()
        server.start()
        r.xadd(stream, {"payload": b"{}"})
        wait_for(lambda: handled(r, stream) >= 2, 30,
                 what=lambda: f"both entries handled:\n{daemon.output()}")
        wait_for(lambda: r.xpending(stream, "edged")["pending"] == 0, 30, what="drained")
        wait_for(lambda: http(port, "/readyz")[0] == 200, what="ready again")
        assert daemon.proc.poll() is None, daemon.output()
        assert "Traceback" not in daemon.output(), daemon.output()
        r.close()
    finally:
        for d in spawned:
            d.kill()
        server.stop()


@pytest.mark.anyio
async def test_an_error_that_escapes_a_streams_parts_restarts_that_stream_only(
    server: Server, r: redis.Redis, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The net under the loops: a bug (here, injected: the reader's first read raises, as a
    reply edged cannot parse would) ends the stream's parts while an entry is in flight. Must
    hold: the stream starts again on fresh parts (one restart counted, degraded meanwhile, the
    traceback logged), re-reads its own pending entry first and handles it, handles a new one,
    leaves nothing pending, and is healthy again."""
    import anyio

    from edged import Event
    from tests.support import Consuming, edged_client, make_consumer, until

    seen: list[str] = []
    gate = anyio.Event()

    async def handler(event: Event) -> None:
        seen.append(event.id)
        if len(seen) == 1:
            await gate.wait()  # in flight when the reader fails

    fail_read(monkeypatch, 3)  # history page, switch to ">", then this one
    first = r.xadd(stream, {"payload": b"{}"}).decode()
    client = edged_client(server.url, socket_timeout=30)
    try:
        consumer = make_consumer(client, stream, handler, concurrency=2)
        async with Consuming(consumer):
            await until(lambda: consumer.restarts == 1, what="one restart")
            gate.set()
            await until(lambda: seen.count(first) == 2, what="its own pending entry run again")
            second = r.xadd(stream, {"payload": b"{}"}).decode()
            await until(lambda: second in seen, what="a new entry handled")
            await until(lambda: r.xpending(stream, "edged")["pending"] == 0, what="drained")
            await until(lambda: not consumer.health.degraded, what="healthy again")
            assert consumer.health.last_error is not None
            assert "does not understand" in consumer.health.last_error
    finally:
        await client.aclose()


def test_a_dead_letter_key_of_the_wrong_type_keeps_the_entry_and_the_stream_going(
    server: Server, r: redis.Redis, stream: str, fleet: Fleet
) -> None:
    """The dead-letter key is a string, so a rejected entry cannot be dead-lettered. Must hold:
    the stream is degraded naming the dead-letter key and WRONGTYPE; the entry stays pending
    (nothing lost, no half-written copy); good entries are still handled; once the key is
    deleted the entry is dead-lettered on a later delivery, nothing stays pending, and the
    stream is healthy again."""
    dead = f"{stream}:dead"
    r.set(dead, "not a stream")
    port = free_port()
    daemon = fleet.start("sv4", [stream_cfg(stream, **{"max-deliveries": 50})],
                         listen=f"127.0.0.1:{port}")
    daemon.wait_ready()
    rejected = r.xadd(stream, {"payload": b'{"reject": "no"}'}).decode()
    wait_for(lambda: metric(port, "edged_stream_degraded", stream) == 1, what="degraded")
    body = http(port, "/readyz")[1]
    assert f"XADD {dead}: WRONGTYPE" in body, body
    assert r.xpending(stream, "edged")["pending"] == 1
    r.xadd(stream, {"payload": b"{}"})
    wait_for(lambda: handled(r, stream) == 1, what="a good entry handled meanwhile")
    r.delete(dead)
    wait_for(lambda: r.exists(dead) and r.xlen(dead) == 1, 30,
             what=lambda: f"dead-lettered after the fix:\n{daemon.output()}")
    assert r.xrange(dead)[0][1][b"edged-id"].decode() == rejected
    wait_for(lambda: r.xpending(stream, "edged")["pending"] == 0, what="drained")
    wait_for(lambda: metric(port, "edged_stream_degraded", stream) == 0, 30, what="healthy")
    assert daemon.proc.poll() is None


def test_a_flood_of_http_clients_past_the_file_limit_stops_only_http(
    server: Server, r: redis.Redis, stream: str, fleet: Fleet
) -> None:
    """The daemon's open-file limit is cut (prlimit) to a few above what it uses, then more
    HTTP clients connect than that allows and send nothing. Must hold: accepting fails
    (EMFILE) and is retried, the daemon keeps running and handling entries, and once the
    clients are gone (closed here, and by the read timeout on its side) /readyz answers 200.
    systemd's notification socket is set, so STATUS= is due while files are out too."""
    import resource
    import socket

    port = free_port()
    # systemd's notification socket, so that STATUS= is sent (every 5 s) while files run out.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(fleet.tmp_path / "notify.sock"))
    daemon = fleet.start("sv5", [stream_cfg(stream)], listen=f"127.0.0.1:{port}",
                         env={"NOTIFY_SOCKET": str(fleet.tmp_path / "notify.sock")})
    daemon.wait_ready()
    used = len(list(Path(f"/proc/{daemon.pid}/fd").iterdir()))
    soft, hard = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (used + 4, hard))
    clients = []
    try:
        for _ in range(30):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        daemon.wait_output("cannot accept a connection")
        # Past the notifier's next STATUS= (every 5 s), still out of files: it must not end us.
        past = time.monotonic() + 6
        wait_for(lambda: daemon.proc.poll() is not None or time.monotonic() > past, 10,
                 interval=0.1, what="a notification tick while out of files")
        assert daemon.proc.poll() is None, daemon.output()
    finally:
        for c in clients:
            c.close()
        notify.close()
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (soft, hard))
    r.xadd(stream, {"payload": b"{}"})
    wait_for(lambda: handled(r, stream) == 1, 30, what=lambda: f"handled:\n{daemon.output()}")
    wait_for(lambda: http(port, "/readyz")[0] == 200, 30, what="HTTP answers again")
    assert daemon.proc.poll() is None, daemon.output()


@pytest.mark.anyio
async def test_a_stream_that_fails_before_its_first_read_still_becomes_ready(
    server: Server, r: redis.Redis, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The very first read fails (injected), so the stream's parts are rebuilt before it was
    ever ready. Must hold: the event the daemon's READY=1 waits on is set once the new parts
    read, and an entry is handled."""
    from edged import Event
    from tests.support import Consuming, edged_client, make_consumer, until

    seen: list[str] = []

    async def handler(event: Event) -> None:
        seen.append(event.id)

    fail_read(monkeypatch, 1)
    entry = r.xadd(stream, {"payload": b"{}"}).decode()
    client = edged_client(server.url, socket_timeout=30)
    try:
        consumer = make_consumer(client, stream, handler, concurrency=2)
        ready = consumer.ready
        async with Consuming(consumer):
            await until(lambda: consumer.restarts == 1, what="one restart")
            await until(ready.is_set, what="ready after the restart")
            await until(lambda: entry in seen, what="the entry handled")
    finally:
        await client.aclose()
