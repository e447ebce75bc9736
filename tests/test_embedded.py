"""The embedded server's lifetime (README "Walk-through"): it dies with the daemon that started
it, however that daemon dies; a server left behind is recognised as stale and stopped;
`edged embedded status|stop|reset`; a config that names no server still finds it; the demo
serves /metrics."""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path

import redis

from tests.markers import DEMO_PORT
from tests.servers import Server, free_port
from tests.support import DaemonProcess, process_gone, run_edged, wait_for, write_config
from tests.support import test_env as edged_env
from tests.test_daemon_process import _embedded_record as _record
from tests.test_daemon_process import state  # noqa: F401 - fixture

pytestmark = DEMO_PORT


def test_the_server_dies_with_a_killed_daemon_and_the_demo_serves_metrics(
        tmp_path: Path, state: Path, spawned: list[DaemonProcess]) -> None:  # noqa: F811
    """SIGKILL of `edged start --embedded` (a closed terminal is no kinder) takes its server
    with it: nothing is left under PID 1. While it runs, the demo answers /metrics."""
    env = edged_env(XDG_STATE_HOME=str(state))
    d = DaemonProcess.command(["start", "--embedded"], tmp_path / "d.log", env)
    spawned.append(d)
    d.wait_ready(timeout=30)
    record = wait_for(lambda: _record(state), what="embedded.json")
    assert record["owner"] == d.pid
    conn = http.client.HTTPConnection("127.0.0.1", 9478, timeout=10)
    conn.request("GET", "/metrics")
    assert b"edged_info" in conn.getresponse().read()
    conn.close()
    assert "127.0.0.1:9478" in d.output()
    d.proc.kill()
    d.proc.wait()
    wait_for(lambda: process_gone(record["pid"]), 15, what="the server gone with its daemon")


def test_a_stale_server_is_recognised_stopped_and_replaced(
        tmp_path: Path, state: Path, spawned: list[DaemonProcess]) -> None:  # noqa: F811
    """A server recorded with a daemon that is gone (as an older edged could leave behind) is
    not used by other commands, `embedded status` calls it stale, and the next
    `start --embedded` stops it and starts its own."""
    orphan = Server(port=free_port(), data_dir=tmp_path / "orphan").start()
    (state / "edged").mkdir(parents=True)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (state / "edged" / "embedded.json").write_text(json.dumps(
        {"url": orphan.url, "pid": orphan.pid, "owner": dead, "data": str(tmp_path / "orphan")}))
    env = edged_env(XDG_STATE_HOME=str(state))
    out = run_edged("embedded", "status", "--json", env=env)
    assert out.returncode == 0 and "STALE" in json.loads(out.stdout)["state"], out.stdout
    out = run_edged("groups", "--timeout", "1", env=env)  # not the stale server: the default URL
    assert orphan.url not in out.stdout + out.stderr

    d = DaemonProcess.command(["start", "--embedded"], tmp_path / "d.log", env)
    spawned.append(d)
    d.wait_ready(timeout=30)
    assert process_gone(orphan.pid), "the stale server still runs"
    assert f"stopped the embedded server pid {orphan.pid}" in d.output()
    record = wait_for(lambda: _record(state), what="the new record")
    assert record["pid"] != orphan.pid and record["owner"] == d.pid
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0


def test_embedded_stop_reset_and_a_config_without_a_server(
        tmp_path: Path, state: Path, spawned: list[DaemonProcess]) -> None:  # noqa: F811
    env = edged_env(XDG_STATE_HOME=str(state))
    d = DaemonProcess.command(["start", "--embedded"], tmp_path / "d.log", env)
    spawned.append(d)
    d.wait_ready(timeout=30)
    record = wait_for(lambda: _record(state), what="embedded.json")
    # A config with streams but no [redis] server: commands find the embedded one.
    cfg = write_config(tmp_path / "c.toml", [{"stream": "edged:demo",
                                              "handler": "edged.handlers:log"}])
    out = run_edged("groups", "-c", str(cfg), "--sample", "0s", env=env)
    assert out.returncode == 0 and "edged:demo" in out.stdout, out.stdout + out.stderr

    assert run_edged("embedded", "reset", env=env).returncode == 2  # needs --yes
    with redis.Redis.from_url(record["url"]) as er:
        er.xadd("kept", {"payload": b"{}"})
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    wait_for(lambda: process_gone(record["pid"]), 15, what="server stopped with the daemon")
    out = run_edged("embedded", "stop", env=env)
    assert out.returncode == 0 and "not running" in out.stdout
    data = state / "edged" / "embedded"
    assert any(data.rglob("*.aof")), "the data stays after a stop"
    out = run_edged("embedded", "reset", "--yes", env=env)
    assert out.returncode == 0 and not data.exists(), out.stdout
