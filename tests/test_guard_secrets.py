"""Guards the promise "passwords never appear in logs, errors or `edged config show`" (README,
"Secrets") for the one place a password can still be written: the `url` of `[redis]`
(`redis://user:pw@host`, which the configuration reference allows, though it prefers
`password-file`).

Every other test gives the password through a file, so a start-up line or an error message
that prints the configured URL as it is would leak nothing there. Here the password is in the
config file's `url` only: the daemon must log in with it and work, and its start-up line, its
"Redis unavailable" warnings, `edged config show` and a CLI command's error must show the URL
with the password masked.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import Server, free_port
from tests.support import DaemonProcess, run_edged, wait_for, write_config
from tests.support import test_env as edged_env

pytestmark = pytest.mark.slow

GROUP = "edged"
USER = "urluser"
# Distinctive, URL-safe, and nothing else in a log line could contain it by chance.
PASSWORD = "UrlPw-7c1e94b2d0"


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[Server]:
    """A server whose only user is USER (password PASSWORD); `default` is off."""
    srv = Server(port=free_port(), data_dir=tmp_path / "acl", extra=[
        "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all",
        "--user", "default", "off",
    ]).start()
    yield srv
    srv.stop()


def url_with_password(port: int) -> str:
    return f"redis://{USER}:{PASSWORD}@127.0.0.1:{port}/0"


def marks(r: redis.Redis, key: str) -> list[str]:
    return [raw.decode().split()[0] for raw in r.lrange(key, 0, -1)]


def start_daemon(spawned: list[DaemonProcess], tmp_path: Path, name: str, url: str,
                 stream: str, record_url: str) -> DaemonProcess:
    consumer = f"{name}-{uuid.uuid4().hex[:6]}"
    cfg = write_config(
        tmp_path / f"{name}.toml",
        [{"stream": stream, "group": GROUP, "handler": "tests.handlers:record", "start-id": "0"}],
        daemon={"consumer": consumer}, redis={"url": url},
    )
    env = edged_env(EDGED_TEST_REDIS=record_url, EDGED_TEST_CONSUMER=consumer)
    d = DaemonProcess(cfg, None, tmp_path / f"{name}.log", env=env)
    spawned.append(d)
    return d


def assert_hidden(text: str, where: str) -> None:
    assert PASSWORD not in text, f"the password is in {where}:\n{text}"


def test_password_in_url_never_reaches_the_logs(
    server: Server, r: redis.Redis, acl_server: Server, tmp_path: Path,
    spawned: list[DaemonProcess],
) -> None:
    """A daemon whose only credential is the password in `[redis] url` logs in as that user,
    becomes ready and handles an entry; its output (start-up line included, which names the
    URL: with `***` for the password) never holds the password, nor does `edged config show`,
    nor its argv; after SIGTERM it exits 0 and the whole output still holds no password."""
    stream = f"sec:{uuid.uuid4().hex[:10]}"
    url = url_with_password(acl_server.port)
    d = start_daemon(spawned, tmp_path, "urlpw", url, stream, server.url)
    d.wait_ready()
    with redis.Redis.from_url(url, socket_timeout=5) as ar:
        entry = ar.xadd(stream, {"payload": json.dumps({"n": 1})}).decode()
        wait_for(lambda: marks(r, f"{stream}:handled") == [entry],
                 what=lambda: f"the entry handled; daemon output:\n{d.output()}")
        wait_for(lambda: int(ar.xpending(stream, GROUP)["pending"]) == 0, what="the entry acked")
    out = d.output()
    assert_hidden(out, "the daemon's output")
    # The start-up line names the server it reached, with the password masked.
    assert f"redis://{USER}:***@127.0.0.1:{acl_server.port}/0" in out, out
    assert PASSWORD.encode() not in Path(f"/proc/{d.pid}/cmdline").read_bytes()
    shown = run_edged("config", "show", "-c", str(tmp_path / "urlpw.toml"))
    assert shown.returncode == 0, shown.stderr
    assert f"{USER}:***@" in shown.stdout, shown.stdout
    assert_hidden(shown.stdout + shown.stderr, "`edged config show`")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.output()
    assert_hidden(d.output(), "the daemon's output after its stop")


def test_password_in_url_stays_hidden_when_redis_is_unavailable(
    server: Server, tmp_path: Path, spawned: list[DaemonProcess],
) -> None:
    """The URL with a password names a port where nothing listens: the daemon keeps saying
    that Redis at that URL is unavailable (with `***`), and `edged pending` exits 69 with an
    error that names the URL; neither holds the password."""
    port = free_port()
    url = url_with_password(port)
    stream = f"sec:{uuid.uuid4().hex[:10]}"
    d = start_daemon(spawned, tmp_path, "down", url, stream, server.url)
    d.wait_output("unavailable", timeout=20)
    assert d.proc.poll() is None, d.output()
    out = d.output()
    assert_hidden(out, "the daemon's output")
    assert f"redis://{USER}:***@127.0.0.1:{port}/0" in out, out
    res = run_edged("pending", stream, "-c", str(tmp_path / "down.toml"), timeout=60)
    assert res.returncode == 69, (res.returncode, res.stdout, res.stderr)
    assert f"{USER}:***@" in res.stderr, res.stderr
    assert_hidden(res.stdout + res.stderr, "`edged pending`'s error")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0, d.output()
    assert_hidden(d.output(), "the daemon's output after its stop")
