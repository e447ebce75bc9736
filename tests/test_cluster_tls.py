"""edged on a TLS-only Redis Cluster, with the same ``[redis.tls]`` settings as one server.

The cluster (tests/cluster.py ``tls_cluster``: three primaries, one replica each) listens with
TLS alone, requires client certificates signed by the test CA, and runs its bus, replication
and MIGRATE over TLS. Daemons run as `edged start -c` with ``[redis.tls]`` and
``[redis.cluster] nodes``; handlers record on the plain single test server (``server``).
Needs a server built with TLS (Debian's redis-server): skipped on valkey, failed there when
EDGED_REQUIRE_TLS=1 (CI's Redis 7.0 leg), as tests/test_tls.py is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from edged.local_cluster import LocalCluster, migrate_slot
from edged.sharding import key_slot
from tests.cluster import cluster_client, tls_cluster, tls_cluster_certs  # noqa: F401 - fixtures
from tests.servers import Server
from tests.support import DaemonProcess, run_edged, wait_for
from tests.support import test_env as edged_env
from tests.test_cluster import on_three_primaries
from tests.tls import Certs

GROUP = "edged"


def tls_cluster_config(path: Path, cluster: LocalCluster, streams: list[str], ca: Path,
                       cert: Path | None, key: Path | None, consumer: str = "tls-1") -> Path:
    """`[redis.tls]` exactly as for one server (tests/test_tls.py), `[redis.cluster]` instead
    of a url."""
    lines = ["[redis]", "[redis.tls]", f'ca-file = "{ca}"']
    if cert is not None and key is not None:
        lines += [f'cert-file = "{cert}"', f'key-file = "{key}"']
    lines += ["[redis.cluster]", "nodes = [" + ", ".join(f'"{s}"' for s in cluster.seeds()) + "]",
              "[daemon]", 'listen = ""', f'consumer = "{consumer}"', 'shutdown-grace = "5s"']
    for s in streams:
        lines += ["[[streams]]", f'stream = "{s}"', 'handler = "tests.handlers:record"',
                  'start-id = "0"']
    path.write_text("\n".join(lines) + "\n")
    return path


def handled(recorder: redis.Redis, stream: str) -> list[str]:
    return [m.decode().split()[0] for m in recorder.lrange(f"{stream}:handled", 0, -1)]


@pytest.fixture
def trc(tls_cluster: LocalCluster) -> Iterator[RedisCluster]:  # noqa: F811
    """A TLS cluster client of the test's own (the cluster's client certificate)."""
    tls_cluster.wait_ok()
    client = cluster_client(tls_cluster)
    yield client
    client.close()


def test_the_cluster_is_tls_only(tls_cluster: LocalCluster, trc: RedisCluster) -> None:  # noqa: F811
    """Every node refuses a plain client; through TLS every node answers, and each replica's
    link to its primary (TLS replication) is up."""
    assert len(tls_cluster.primaries()) == 3 and len(tls_cluster.replicas()) == 3
    for node in tls_cluster.nodes:
        with redis.Redis(host=node.host, port=node.port, socket_timeout=2,
                         socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)) as plain, \
                pytest.raises(redis.ConnectionError):
            plain.ping()
        with node.client() as tls:
            assert tls.ping()
    for replica in tls_cluster.replicas():
        with replica.client() as tls:
            assert tls.info("replication")["master_link_status"] == "up"
    trc.set("tls:probe", "1")
    assert trc.get("tls:probe") == b"1"


def test_daemon_and_publish_over_tls_on_a_cluster(
    tls_cluster: LocalCluster, tls_cluster_certs: Certs, trc: RedisCluster,  # noqa: F811
    server: Server, r: redis.Redis, tmp_path: Path, spawned: list[DaemonProcess],
) -> None:
    """A daemon consumes three streams on three different primaries of the TLS-only cluster,
    with a CA and a client certificate in [redis.tls]; `edged publish -c --wait-replicas 1`
    publishes to each over TLS.

    Must hold: the daemon becomes ready; each publish exits 0 (one replica acknowledged the
    write: TLS replication); each entry is handled once and acked; the daemon logged no
    error."""
    certs = tls_cluster_certs
    streams = on_three_primaries(tls_cluster, f"tls:{tmp_path.name[-6:]}:")
    cfg = tls_cluster_config(tmp_path / "tls.toml", tls_cluster, streams, certs.ca,
                             certs.client_cert, certs.client_key)
    env = edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER="tls-1")
    daemon = DaemonProcess(cfg, None, tmp_path / "daemon.log", env=env)
    spawned.append(daemon)
    daemon.wait_ready()
    published: dict[str, str] = {}
    for s in streams:
        res = run_edged("publish", s, '{"over": "tls"}', "--wait-replicas", "1", "-c", str(cfg),
                        env=env)
        assert res.returncode == 0, res.stderr
        published[s] = res.stdout.strip()
    for s in streams:
        wait_for(lambda s=s: handled(r, s) == [published[s]],
                 what=lambda s=s: f"{s} handled: {handled(r, s)}\n{daemon.output()}")
        wait_for(lambda s=s: trc.xpending(s, GROUP)["pending"] == 0, what=f"{s} acked")
    out = daemon.output()
    assert "cluster via " in out
    assert " ERROR " not in out and "Traceback" not in out, out
    daemon.stop()


def test_a_wrong_ca_fails_clearly_and_the_daemon_keeps_retrying(
    tls_cluster: LocalCluster, tls_cluster_certs: Certs, trc: RedisCluster,  # noqa: F811
    server: Server, tmp_path: Path, spawned: list[DaemonProcess],
) -> None:
    """With a CA that did not sign the nodes' certificate, as for one server: `edged publish`
    exits 69 with a message about the certificate and no traceback, and writes nothing; the
    daemon says why it cannot connect, keeps retrying, and never becomes ready."""
    certs = tls_cluster_certs
    stream = f"tls:{tmp_path.name[-6:]}:wrong-ca"
    cfg = tls_cluster_config(tmp_path / "wrong-ca.toml", tls_cluster, [stream], certs.other_ca,
                             certs.client_cert, certs.client_key)
    res = run_edged("publish", stream, "{}", "-c", str(cfg))
    assert res.returncode == 69, res.stderr
    assert "certificate" in res.stderr.lower(), res.stderr
    assert "Traceback" not in res.stderr
    assert trc.xlen(stream) == 0
    env = edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER="tls-1")
    daemon = DaemonProcess(cfg, None, tmp_path / "daemon.log", env=env)
    spawned.append(daemon)
    daemon.wait_output("CERTIFICATE_VERIFY_FAILED", count=3)  # tried, and tried again
    assert daemon.proc.poll() is None, daemon.output()
    assert "ready:" not in daemon.output()
    assert "Traceback" not in daemon.output()
    daemon.stop()


def test_a_client_without_a_certificate_is_refused(
    tls_cluster: LocalCluster, tls_cluster_certs: Certs, trc: RedisCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The nodes require client certificates: without cert-file/key-file `edged publish`
    exits 69 with one line and no traceback, writing nothing. (The line need not name the
    certificate: under TLS 1.3 the server's alert may lose the race with its closing the
    connection, and the client then sees a reset; tests/test_tls.py does not ask either.)"""
    stream = f"tls:{tmp_path.name[-6:]}:no-cert"
    cfg = tls_cluster_config(tmp_path / "no-cert.toml", tls_cluster, [stream],
                             tls_cluster_certs.ca, None, None)
    res = run_edged("publish", stream, "{}", "-c", str(cfg))
    assert res.returncode == 69, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert trc.xlen(stream) == 0


def test_migrate_slot_over_tls(
    tls_cluster: LocalCluster, tls_cluster_certs: Certs, trc: RedisCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """migrate_slot on the TLS cluster: MIGRATE between nodes goes over TLS (tls-cluster).
    A stream moves with its entries to another primary, and `edged publish` over TLS then
    appends to it there."""
    stream = f"tls:{tmp_path.name[-6:]}:moved"
    for i in range(5):
        trc.xadd(stream, {"n": str(i)})
    slot = key_slot(stream)
    source = tls_cluster.node_for_slot(slot)
    target = next(p for p in tls_cluster.primaries() if p is not source)
    migrate_slot(tls_cluster, slot, target)
    with target.client() as c:
        assert c.xlen(stream) == 5
    cfg = tls_cluster_config(tmp_path / "moved.toml", tls_cluster, [stream],
                             tls_cluster_certs.ca, tls_cluster_certs.client_cert,
                             tls_cluster_certs.client_key)
    res = run_edged("publish", stream, "{}", "-c", str(cfg))
    assert res.returncode == 0, res.stderr
    assert trc.xlen(stream) == 6
