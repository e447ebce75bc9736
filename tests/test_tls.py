"""TLS towards Redis: rediss:// with a CA, a client certificate, and verification on by default.

Runs against a server built with TLS (Debian's redis-server: CI's second leg, which sets
EDGED_REQUIRE_TLS=1 so these tests fail rather than skip there).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import Server, free_port
from tests.support import DaemonProcess, run_edged, wait_for
from tests.support import test_env as edged_env
from tests.tls import Certs, make_certs, require_tls, tls_server_args


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Certs, int]]:
    """A server with a plain port (for the test's own checks) and a TLS-only port that
    requires client certificates signed by the test CA."""
    require_tls()
    base = tmp_path_factory.mktemp("tls")
    certs = make_certs(base / "certs")
    tls_port = free_port()
    srv = Server(port=free_port(), data_dir=base / "data", extra=tls_server_args(certs, tls_port))
    srv.start()
    yield srv, certs, tls_port
    srv.stop()


def tls_config(path: Path, stream: str, port: int, ca: Path, cert: Path | None) -> Path:
    lines = ["[redis]", f'url = "rediss://127.0.0.1:{port}/0"', "[redis.tls]", f'ca-file = "{ca}"']
    if cert is not None:
        lines += [f'cert-file = "{cert}"', f'key-file = "{cert.with_suffix(".key")}"']
    lines += ["[daemon]", 'listen = ""', 'consumer = "tls-1"', 'shutdown-grace = "5s"',
              "[[streams]]", f'stream = "{stream}"', 'handler = "tests.handlers:record"']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_daemon_and_publish_over_tls_with_a_client_certificate(
    tls_server: tuple[Server, Certs, int], stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """The daemon and `edged publish` both talk to the TLS port only (rediss://, the test CA,
    a client certificate). An entry published over TLS is handled over TLS; the server saw
    TLS clients (its plain port was used only by this test)."""
    srv, certs, port = tls_server
    cfg = tls_config(tmp_path / "tls.toml", stream, port, certs.ca, certs.client_cert)
    env = edged_env(EDGED_TEST_REDIS=srv.url, EDGED_TEST_CONSUMER="tls-1")
    daemon = DaemonProcess(cfg, None, tmp_path / "daemon.log", env=env)
    spawned.append(daemon)
    daemon.wait_ready()
    res = run_edged("publish", stream, '{"over": "tls"}', "-c", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    entry_id = res.stdout.strip()
    r = redis.Redis.from_url(srv.url)
    wait_for(lambda: r.llen(f"{stream}:handled") == 1, what="the entry handled over TLS")
    assert r.lindex(f"{stream}:handled", 0).decode().startswith(entry_id)
    # The handler records before it returns; the ack follows it.
    wait_for(lambda: r.xpending(stream, "edged")["pending"] == 0, what="the entry acked")
    assert f"rediss://127.0.0.1:{port}" in daemon.output()
    daemon.stop()


def test_verification_is_on_by_default(
    tls_server: tuple[Server, Certs, int], stream: str, tmp_path: Path
) -> None:
    """The server's certificate is checked against the configured CA: with a CA that did not
    sign it, publishing fails with exit 69 and a message about the certificate, nothing is
    written, and no traceback is printed."""
    srv, certs, port = tls_server
    cfg = tls_config(tmp_path / "wrong-ca.toml", stream, port, certs.other_ca, certs.client_cert)
    res = run_edged("publish", stream, "{}", "-c", str(cfg))
    assert res.returncode == 69, res.stderr
    assert "certificate" in res.stderr.lower()
    assert "Traceback" not in res.stderr
    assert redis.Redis.from_url(srv.url).xlen(stream) == 0


def test_a_client_without_a_certificate_is_refused(
    tls_server: tuple[Server, Certs, int], stream: str, tmp_path: Path
) -> None:
    """The server requires client certificates: without cert-file/key-file the handshake
    fails; `edged publish` exits 69 with one clear line."""
    srv, certs, port = tls_server
    cfg = tls_config(tmp_path / "no-cert.toml", stream, port, certs.ca, None)
    res = run_edged("publish", stream, "{}", "-c", str(cfg))
    assert res.returncode == 69, res.stderr
    assert "Traceback" not in res.stderr
    assert redis.Redis.from_url(srv.url).xlen(stream) == 0
