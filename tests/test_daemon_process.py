"""`edged start` as a real process: crash recovery, signals, Redis down, embedded server, auth.

Every test runs the daemon as a subprocess against a real server and checks the outcome from
Redis (the PEL, what tests.handlers:record wrote) and from the daemon's own output.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.markers import DEMO_PORT
from tests.servers import Server, free_port
from tests.support import (
    DaemonProcess,
    pending_rows,
    process_gone,
    run_edged,
    wait_for,
    write_config,
)
from tests.support import test_env as edged_env

pytestmark = pytest.mark.slow

GROUP = "edged"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def extra_servers() -> Iterator[list[Server]]:
    """Servers a test started besides the session one; stopped at teardown."""
    servers: list[Server] = []
    yield servers
    for s in servers:
        s.stop()


def daemon(
    spawned: list[DaemonProcess],
    config: Path,
    url: str | None,
    log_path: Path,
    *,
    record_url: str,
    consumer: str,
) -> DaemonProcess:
    env = edged_env(EDGED_TEST_REDIS=record_url, EDGED_TEST_CONSUMER=consumer)
    d = DaemonProcess(config, url, log_path, env=env)
    spawned.append(d)
    return d


def stream_cfg(stream: str, **extra: Any) -> dict[str, Any]:
    return {
        "stream": stream, "group": GROUP, "handler": "tests.handlers:record",
        "start-id": "0", **extra,
    }


def marks(r: redis.Redis, key: str) -> list[tuple[str, str, int]]:
    """The (id, consumer, delivery) runs recorded by tests.handlers:record in list ``key``."""
    out = []
    for raw in r.lrange(key, 0, -1):
        entry_id, consumer, delivery = raw.decode().split()[:3]
        out.append((entry_id, consumer, int(delivery)))
    return out


def handled_ids(r: redis.Redis, stream: str) -> set[str]:
    return {m[0] for m in marks(r, f"{stream}:handled")}


def pending_count(r: redis.Redis, stream: str) -> int:
    return int(r.xpending(stream, GROUP)["pending"])



def add(r: redis.Redis, stream: str, body: dict[str, Any]) -> str:
    return r.xadd(stream, {"payload": json.dumps(body)}).decode()


def uid() -> str:
    return uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------- crash recovery


def test_restart_after_sigkill_recovers_own_pending_entries(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """40 entries published with `edged publish -`, a daemon (concurrency 4, 0.3 s handler)
    is SIGKILLed mid-batch, leaving entries in its PEL. Restarted under the same consumer
    name it must read its own history back first: afterwards every published id is handled,
    the PEL is empty, every entry pending at the kill was run again with delivery >= 2 by the
    same consumer, and the restarted daemon logs that it recovered them."""
    consumer = f"host-{uid()}"
    cfg = write_config(
        tmp_path / "edged.toml",
        [stream_cfg(stream, concurrency=4)],
        daemon={"consumer": consumer},
    )
    lines = "".join(json.dumps({"sleep": 0.3, "n": i}) + "\n" for i in range(40))
    pub = run_edged("publish", stream, "-", "--url", server.url, input=lines)
    assert pub.returncode == 0, pub.stderr
    published = pub.stdout.split()
    assert len(published) == 40 and r.xlen(stream) == 40

    first = daemon(spawned, cfg, server.url, tmp_path / "first.log",
                   record_url=server.url, consumer=consumer)
    wait_for(lambda: len(handled_ids(r, stream)) >= 4 and pending_count(r, stream) > 0,
             timeout=30, what="a few entries handled while others are in flight")
    first.proc.kill()
    first.proc.wait()

    left = pending_rows(r, stream)
    assert left, "SIGKILL mid-batch should leave entries pending"
    assert {row["consumer"] for row in left} == {consumer}
    assert len(handled_ids(r, stream)) < 40, "the kill came too late to test anything"

    second = daemon(spawned, cfg, server.url, tmp_path / "second.log",
                    record_url=server.url, consumer=consumer)
    try:
        wait_for(lambda: handled_ids(r, stream) >= set(published), timeout=30,
                 what="every published entry handled after the restart")
        wait_for(lambda: pending_count(r, stream) == 0, timeout=15, what="PEL drained")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\npending at kill: {left}\npending now: {pending_rows(r, stream)}\n"
            f"runs: {marks(r, f'{stream}:handled')}\nlog:\n{second.output()}"
        ) from None
    assert handled_ids(r, stream) == set(published)

    reruns = {m[0] for m in marks(r, f"{stream}:handled") if m[2] >= 2}
    assert reruns, "no entry came back from the consumer's own history"
    assert {row["id"] for row in left} <= reruns, (left, reruns)
    assert {m[1] for m in marks(r, f"{stream}:handled")} == {consumer}
    second.wait_output("recovered")
    assert second.proc.poll() is None
    second.signal(signal.SIGTERM)
    assert second.wait_exit(20) == 0, second.output()


def test_acks_on_a_server_with_an_empty_script_cache(
    tmp_path: Path, stream: str, spawned: list[DaemonProcess], extra_servers: list[Server]
) -> None:
    """A fresh server has no scripts cached, as after a Redis restart or a failover. A daemon
    with concurrency 1 gets a quick entry and then one that hangs: the quick one must be
    acked (fenced ack loads its script) while the hanging one runs, so the PEL holds only the
    hanging entry, and once that is released the PEL drains."""
    srv = Server(port=free_port(), data_dir=tmp_path / "fresh")
    extra_servers.append(srv)
    srv.start()
    consumer = f"host-{uid()}"
    cfg = write_config(tmp_path / "edged.toml", [stream_cfg(stream, concurrency=1)],
                       daemon={"consumer": consumer})
    d = daemon(spawned, cfg, srv.url, tmp_path / "d.log", record_url=srv.url, consumer=consumer)
    d.wait_ready()
    with srv.client() as fr:
        quick = add(fr, stream, {"n": 1})
        hung = add(fr, stream, {"hang": True})
        wait_for(lambda: handled_ids(fr, stream) == {quick}, what="quick entry handled")
        wait_for(lambda: {m[0] for m in marks(fr, f"{stream}:started")} == {quick, hung},
                 what="hanging entry started")
        try:
            wait_for(lambda: [row["id"] for row in pending_rows(fr, stream)] == [hung],
                     timeout=10, what="only the hanging entry pending")
        except AssertionError as exc:
            stats = {k: v["calls"] for k, v in fr.info("commandstats").items()
                     if k in ("cmdstat_evalsha", "cmdstat_xack", "cmdstat_script|load")}
            raise AssertionError(f"{exc}: pending {pending_rows(fr, stream)}; {stats}") from None
        fr.set(f"{stream}:release", 1)
        wait_for(lambda: pending_count(fr, stream) == 0, what="PEL drained after release")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.output()


# --------------------------------------------------------------------------- signals


def test_sigterm_drains_finishes_short_work_and_leaves_hung_work_pending(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """With shutdown-grace 3s, one entry sleeping 1.5 s and one hanging are in flight when
    SIGTERM arrives. The sleeping one must finish and be acked; the hanging one is cancelled
    at the grace deadline and stays pending, owned by this consumer, with its delivery count
    untouched; the process exits 0, says it is draining, and names the cancelled entry."""
    consumer = f"host-{uid()}"
    cfg = write_config(tmp_path / "edged.toml", [stream_cfg(stream, concurrency=4)],
                       daemon={"consumer": consumer, "shutdown-grace": "3s"})
    d = daemon(spawned, cfg, server.url, tmp_path / "d.log", record_url=server.url,
               consumer=consumer)
    d.wait_ready()
    slow = add(r, stream, {"sleep": 1.5})
    hung = add(r, stream, {"hang": True})
    wait_for(lambda: len(marks(r, f"{stream}:started")) == 2, what="both entries started")
    assert handled_ids(r, stream) == set(), "the sleeping entry finished before the signal"

    d.signal(signal.SIGTERM)
    code = d.wait_exit(20)
    out = d.output()
    assert code == 0, out
    assert "draining" in out
    assert handled_ids(r, stream) == {slow}
    rows = pending_rows(r, stream)
    assert [(row["id"], row["consumer"], row["deliveries"]) for row in rows] == [
        (hung, consumer, 1)
    ], rows
    # The log says which entry was cancelled and left pending, not only a count.
    assert f"entry {hung} (delivery 1) cancelled while its handler ran (the shutdown grace " \
           "ran out)" in out
    assert "Traceback" not in out


def test_second_signal_stops_at_once_and_leaves_entry_pending(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """With a 30 s grace and a hanging handler, SIGTERM starts the drain and a second SIGTERM
    must end the process at once (long before the grace) with a non-zero exit code; the
    hanging entry stays pending for this consumer."""
    consumer = f"host-{uid()}"
    cfg = write_config(tmp_path / "edged.toml", [stream_cfg(stream, concurrency=2)],
                       daemon={"consumer": consumer, "shutdown-grace": "30s"})
    d = daemon(spawned, cfg, server.url, tmp_path / "d.log", record_url=server.url,
               consumer=consumer)
    d.wait_ready()
    hung = add(r, stream, {"hang": True})
    wait_for(lambda: marks(r, f"{stream}:started"), what="entry started")

    d.signal(signal.SIGTERM)
    d.wait_output("draining")
    assert d.proc.poll() is None, "exited on the first signal despite a running handler"
    d.signal(signal.SIGTERM)
    code = d.wait_exit(10)  # far below the 30 s grace
    assert code != 0, d.output()
    assert [(row["id"], row["consumer"]) for row in pending_rows(r, stream)] == [(hung, consumer)]
    assert handled_ids(r, stream) == set()


# --------------------------------------------------------------------------- Redis down


def test_waits_for_redis_that_is_down_at_start(
    r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess],
    extra_servers: list[Server],
) -> None:
    """Started against a port where nothing listens, the daemon must stay alive, say Redis is
    unavailable and not claim to be ready. Once a server comes up on that port it must become
    ready and handle an entry published there."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    consumer = f"host-{uid()}"
    cfg = write_config(tmp_path / "edged.toml", [stream_cfg(stream)],
                       daemon={"consumer": consumer})
    d = daemon(spawned, cfg, url, tmp_path / "d.log", record_url=url, consumer=consumer)
    wait_for(lambda: d.output().count("unavailable") >= 4 or d.proc.poll() is not None,
             timeout=20, what="four 'unavailable' retries")
    assert d.proc.poll() is None, f"daemon gave up:\n{d.output()}"
    assert "ready:" not in d.output()
    assert "Traceback" not in d.output()

    srv = Server(port=port, data_dir=tmp_path / "late-server")
    extra_servers.append(srv)
    srv.start()
    d.wait_ready(timeout=30)
    late = srv.client()
    try:
        entry = add(late, stream, {"n": 1})
        wait_for(lambda: handled_ids(late, stream) == {entry}, what="entry handled")
        wait_for(lambda: pending_count(late, stream) == 0, what="entry acked")
    finally:
        late.close()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.output()


def test_sigterm_while_redis_is_down_exits_cleanly(
    stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """A daemon still waiting for an unreachable Redis is told to stop with SIGTERM: it must
    exit 0 (nothing to drain) without a traceback and without ever claiming to be ready."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    consumer = f"host-{uid()}"
    cfg = write_config(tmp_path / "edged.toml", [stream_cfg(stream)],
                       daemon={"consumer": consumer})
    d = daemon(spawned, cfg, url, tmp_path / "d.log", record_url=url, consumer=consumer)
    wait_for(lambda: d.output().count("unavailable") >= 3 or d.proc.poll() is not None,
             timeout=20, what="retries against the missing Redis")
    assert d.proc.poll() is None, d.output()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.output()
    out = d.output()
    assert "ready:" not in out and "Traceback" not in out, out


# --------------------------------------------------------------------------- embedded


def _embedded_env(state: Path, **extra: str) -> dict[str, str]:
    return edged_env(XDG_STATE_HOME=str(state), **extra)


def _embedded_record(state: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state / "edged" / "embedded.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """$XDG_STATE_HOME of a test; an embedded server a killed daemon left running is killed."""
    path = tmp_path / "state"
    yield path
    record = _embedded_record(path)
    if record is not None and not process_gone(int(record["pid"])):
        os.kill(int(record["pid"]), signal.SIGKILL)


@DEMO_PORT
def test_embedded_demo_without_config(
    tmp_path: Path, state: Path, spawned: list[DaemonProcess]
) -> None:
    """`edged start --embedded` with no config starts its own server, records its URL and pid
    in $XDG_STATE_HOME/edged/embedded.json, and consumes edged:demo with the log handler.
    `edged publish` with no --url and no config must find that server; the entry is printed
    by the daemon. SIGINT then stops the daemon with exit 0 and the server with it, leaving
    its append-only data (holding the entry) under the state dir."""
    env = _embedded_env(state)
    d = DaemonProcess.command(["start", "--embedded"], tmp_path / "d.log", env)
    spawned.append(d)
    d.wait_ready(timeout=30)
    record = wait_for(lambda: _embedded_record(state), what="embedded.json")
    assert record["url"].startswith("redis://127.0.0.1:")
    assert not process_gone(record["pid"])
    with redis.Redis.from_url(record["url"], socket_timeout=5) as er:
        assert er.ping()

    pub = run_edged("publish", "edged:demo", '{"hello":"world"}', env=env)
    assert pub.returncode == 0, pub.stderr
    entry = pub.stdout.strip()
    d.wait_output(f'edged:demo {entry} delivery=1 {{"hello":"world"}}')

    d.signal(signal.SIGINT)
    assert d.wait_exit(20) == 0, d.output()
    wait_for(lambda: process_gone(record["pid"]), timeout=15, what="embedded server stopped")
    assert _embedded_record(state) is None, "a stopped server is still recorded"
    data = state / "edged" / "embedded"
    aof = b"".join(p.read_bytes() for p in data.rglob("*.aof") if p.is_file())
    assert b"edged:demo" in aof and entry.encode() in aof, sorted(data.rglob("*"))


@DEMO_PORT
def test_embedded_with_config_runs_configured_streams(
    tmp_path: Path, state: Path, stream: str, spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """`edged start --embedded -c CONFIG` must consume the config's streams on the embedded
    server (not the config's or the default URL): an entry published there with
    `edged publish` (no --url, no config) is printed by the configured log handler, and the
    group exists on the embedded server only."""
    env = _embedded_env(state)
    cfg = write_config(tmp_path / "edged.toml", [
        {"stream": stream, "group": GROUP, "handler": "edged.handlers:log", "start-id": "0"},
    ])
    d = DaemonProcess.command(["start", "--embedded", "-c", str(cfg)], tmp_path / "d.log", env)
    spawned.append(d)
    d.wait_ready(timeout=30)
    record = wait_for(lambda: _embedded_record(state), what="embedded.json")

    pub = run_edged("publish", stream, '{"n":7}', env=env)
    assert pub.returncode == 0, pub.stderr
    entry = pub.stdout.strip()
    d.wait_output(f'{stream} {entry} delivery=1 {{"n":7}}')
    assert "edged:demo" not in d.output(), "the demo stream runs although a config was given"
    with redis.Redis.from_url(record["url"], socket_timeout=5) as er:
        wait_for(lambda: int(er.xpending(stream, GROUP)["pending"]) == 0, what="entry acked")
    assert not r.exists(stream), "the session server was used instead of the embedded one"

    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.output()
    wait_for(lambda: process_gone(record["pid"]), timeout=15, what="embedded server stopped")


# --------------------------------------------------------------------------- connections


def test_unix_socket_url(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess],
    extra_servers: list[Server],
) -> None:
    """A daemon given only `--url unix://<socket>` of a server must connect through the socket,
    become ready and handle (and ack) an entry published on that server."""
    sock = tmp_path / "r.sock"
    srv = Server(port=free_port(), data_dir=tmp_path / "srv",
                 extra=["--unixsocket", str(sock), "--unixsocketperm", "700"])
    extra_servers.append(srv)
    srv.start()
    wait_for(sock.exists, what="unix socket")
    consumer = f"host-{uid()}"
    cfg = write_config(tmp_path / "edged.toml", [stream_cfg(stream)],
                       daemon={"consumer": consumer})
    # The handler records on the session server; only the daemon talks to the socket.
    d = daemon(spawned, cfg, f"unix://{sock}", tmp_path / "d.log", record_url=server.url,
               consumer=consumer)
    d.wait_ready()
    with srv.client() as sr:
        entry = add(sr, stream, {"n": 1})
        wait_for(lambda: handled_ids(r, stream) == {entry}, what="entry handled")
        wait_for(lambda: int(sr.xpending(stream, GROUP)["pending"]) == 0, what="entry acked")
        clients = sr.client_list()
        mine = [c for c in clients if c.get("name") == f"edged:{consumer}"]
        assert mine and all("U" in c["flags"] for c in mine), mine  # U: unix socket client
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.output()


PASSWORD = "S3cretPw"
WRONG_PASSWORD = "WrongPw4711"


@pytest.fixture
def acl_server(tmp_path: Path, extra_servers: list[Server]) -> Server:
    """A server whose only user is `edgeduser` (password S3cretPw); `default` is off."""
    srv = Server(port=free_port(), data_dir=tmp_path / "acl", extra=[
        "--user", "edgeduser", "on", f">{PASSWORD}", "~*", "&*", "+@all",
        "--user", "default", "off",
    ])
    extra_servers.append(srv)
    return srv.start()


def _acl_client(srv: Server) -> redis.Redis:
    return redis.Redis.from_url(srv.url, username="edgeduser", password=PASSWORD, socket_timeout=5)


def _assert_secret_hidden(d: DaemonProcess, *secrets: str) -> None:
    out = d.output()
    cmdline = Path(f"/proc/{d.pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{d.pid}/environ").read_bytes()
    for secret in secrets:
        assert secret not in out, f"{secret!r} in the daemon's output"
        assert secret.encode() not in cmdline, f"{secret!r} in the daemon's argv"
        assert secret.encode() not in environ, f"{secret!r} in the daemon's environment"


def test_acl_user_with_password_file(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess],
    acl_server: Server,
) -> None:
    """Against a server with only an ACL user, a daemon configured with `username` and
    `password-file` logs in, becomes ready and handles an entry; the password appears neither
    in its output, nor its argv, nor its environment."""
    with _acl_client(acl_server) as ar:
        with pytest.raises(redis.AuthenticationError):  # the server really requires the user
            redis.Redis.from_url(acl_server.url, socket_timeout=5).ping()
        secret = tmp_path / "redis.password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        consumer = f"host-{uid()}"
        cfg = write_config(
            tmp_path / "edged.toml", [stream_cfg(stream)], daemon={"consumer": consumer},
            redis={"url": acl_server.url, "username": "edgeduser", "password-file": str(secret)},
        )
        d = daemon(spawned, cfg, None, tmp_path / "d.log", record_url=server.url,
                   consumer=consumer)
        d.wait_ready()
        entry = add(ar, stream, {"n": 1})
        wait_for(lambda: handled_ids(r, stream) == {entry}, what="entry handled")
        wait_for(lambda: int(ar.xpending(stream, GROUP)["pending"]) == 0, what="entry acked")
        _assert_secret_hidden(d, PASSWORD)
        d.signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0, d.output()
        assert PASSWORD not in d.output()


def test_wrong_password_is_reported_and_retried_without_leaking(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess],
    acl_server: Server,
) -> None:
    """A daemon whose password file holds a wrong password must say that authentication
    failed (without printing either password), stay alive and not ready, and keep retrying:
    once the server accepts that password (ACL SETUSER adds it) the daemon becomes ready and
    handles an entry."""
    secret = tmp_path / "redis.password"
    secret.write_text(WRONG_PASSWORD + "\n")
    consumer = f"host-{uid()}"
    cfg = write_config(
        tmp_path / "edged.toml", [stream_cfg(stream)], daemon={"consumer": consumer},
        redis={"url": acl_server.url, "username": "edgeduser", "password-file": str(secret)},
    )
    d = daemon(spawned, cfg, None, tmp_path / "d.log", record_url=server.url, consumer=consumer)

    def auth_error_logged() -> bool:
        text = d.output().lower()
        return ("wrongpass" in text or "invalid username-password" in text
                or "authentication" in text) or d.proc.poll() is not None

    wait_for(auth_error_logged, timeout=20, what=lambda: f"an auth error in:\n{d.output()}")
    assert d.proc.poll() is None, f"daemon exited on a wrong password:\n{d.output()}"
    assert "ready:" not in d.output()
    assert "Traceback" not in d.output()
    _assert_secret_hidden(d, PASSWORD, WRONG_PASSWORD)

    with _acl_client(acl_server) as ar:
        ar.acl_setuser("edgeduser", enabled=True, passwords=[f"+{WRONG_PASSWORD}"])
        d.wait_ready(timeout=30)
        entry = add(ar, stream, {"n": 1})
        wait_for(lambda: handled_ids(r, stream) == {entry}, what="entry handled")
    _assert_secret_hidden(d, PASSWORD, WRONG_PASSWORD)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.output()


def test_missing_password_file_is_a_config_error(
    stream: str, tmp_path: Path, acl_server: Server
) -> None:
    """A password-file that does not exist is a configuration error: `edged start` must exit
    78 at once with one line naming the file, not retry and not print a traceback."""
    missing = tmp_path / "no-such-password"
    cfg = write_config(
        tmp_path / "edged.toml", [stream_cfg(stream)],
        redis={"url": acl_server.url, "username": "edgeduser", "password-file": str(missing)},
    )
    res = run_edged("start", "-c", str(cfg), timeout=30)
    assert res.returncode == 78, (res.returncode, res.stdout, res.stderr)
    assert str(missing) in res.stderr
    assert "Traceback" not in res.stderr
