"""A wrong password or a denied command is reported as what it is, never as an outage: the CLI
exits 77 (EX_NOPERM) naming the user; the daemon logs it at ERROR, says so in /readyz, /healthz
and `edged check`, keeps retrying, and reads the password file again, so fixing the file is
enough (README "Exit codes", "Secrets")."""

from __future__ import annotations

import http.client
import signal
from pathlib import Path

import pytest
import redis

from tests.servers import Server, free_port
from tests.support import DaemonProcess, run_edged, wait_for, write_config
from tests.support import test_env as edged_env

PASSWORD = "s3cret-Passw0rd"
EXIT_NOPERM = 77


@pytest.fixture
def locked(tmp_path: Path) -> Server:
    srv = Server(port=free_port(), data_dir=tmp_path / "srv",
                 extra=["--requirepass", PASSWORD]).start()
    yield srv  # type: ignore[misc]
    srv.stop()


def _get(listen: str, path: str) -> tuple[int, str]:
    host, port = listen.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_the_cli_says_the_user_was_refused_and_exits_77(locked: Server, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("not-it\n")
    cfg = write_config(tmp_path / "c.toml", [], redis={"url": locked.url, "password-file": str(pw)})
    for argv in (["groups", "-c", str(cfg)], ["status", "-c", str(cfg)],
                 ["pending", "s", "-c", str(cfg)], ["groups", "--url", locked.url]):
        out = run_edged(*argv)
        assert out.returncode == EXIT_NOPERM, (argv, out.returncode, out.stderr)
        assert "refused user default" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert "not-it" not in out.stdout + out.stderr
    pw.write_text(PASSWORD + "\n")
    out = run_edged("groups", "-c", str(cfg))
    assert out.returncode == 0, out.stderr


def test_a_command_the_acl_denies_exits_77(locked: Server, tmp_path: Path) -> None:
    admin = locked.client(password=PASSWORD)
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">reader-pw", "~*", "+@read",
                          "+ping", "+client|setname")
    pw = tmp_path / "pw"
    pw.write_text("reader-pw\n")
    cfg = write_config(tmp_path / "c.toml", [],
                       redis={"url": locked.url, "username": "reader", "password-file": str(pw)})
    out = run_edged("publish", "s", "{}", "-c", str(cfg))
    assert out.returncode == EXIT_NOPERM, out.stderr
    assert "refused user reader" in out.stderr and "xadd" in out.stderr.lower()
    admin.close()


def test_the_daemon_reports_a_wrong_password_and_recovers_once_the_file_is_fixed(
        locked: Server, tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    pw = tmp_path / "pw"
    pw.write_text("not-it\n")
    listen = f"127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "c.toml",
                       [{"stream": "acc", "handler": "tests.handlers:record", "start-id": "0"}],
                       daemon={"consumer": "acc", "listen": listen},
                       redis={"url": locked.url, "password-file": str(pw)})
    d = DaemonProcess(cfg, None, tmp_path / "d.log",
                      env=edged_env(EDGED_TEST_REDIS=f"redis://:{PASSWORD}@127.0.0.1:"
                                    f"{locked.port}/0", EDGED_TEST_CONSUMER="acc"))
    spawned.append(d)
    d.wait_output("ERROR edged.daemon: Redis refused user default")
    assert "unavailable" not in d.output(), "a wrong password is not an outage"
    status, text = _get(listen, "/readyz")
    assert status == 503 and "Redis refused user default" in text
    status, text = _get(listen, "/healthz")  # alive: a restart would not fix it
    assert status == 200 and "degraded: Redis refused user default" in text
    out = run_edged("check", "-c", str(cfg))
    assert out.returncode == 1 and "Redis refused user default" in out.stderr + out.stdout

    pw.write_text(PASSWORD + "\n")  # fixed: no restart needed
    d.wait_ready(30)
    client = redis.Redis.from_url(locked.url, password=PASSWORD)
    client.xadd("acc", {"payload": b"{}"})
    wait_for(lambda: client.llen("acc:handled") == 1, 20, what="the entry handled")
    status, _ = _get(listen, "/readyz")
    assert status == 200
    client.close()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    assert "not-it" not in d.output() and PASSWORD not in d.output()


def test_a_server_that_never_answers_is_reported_after_the_timeout(tmp_path: Path) -> None:
    """A server that takes connections and never answers (SIGSTOP) is reported after --timeout,
    or the config's connect-timeout without it: exit 69, one line, no hang."""
    import os

    silent = Server(port=free_port(), data_dir=tmp_path / "silent").start()
    os.kill(silent.pid, signal.SIGSTOP)
    try:
        cfg = write_config(tmp_path / "c.toml", [],
                           redis={"url": silent.url, "connect-timeout": "1s"})
        for argv in (["groups", "--url", silent.url, "--timeout", "0.5"],
                     ["status", "-c", str(cfg)], ["pending", "s", "-c", str(cfg), "--timeout", "1"],
                     ["dlq", "list", "s", "-c", str(cfg)]):
            out = run_edged(*argv, timeout=30)
            assert out.returncode == 69, (argv, out.stderr)
            assert "unavailable" in out.stderr and "Traceback" not in out.stderr, out.stderr
    finally:
        os.kill(silent.pid, signal.SIGCONT)
        silent.stop()
