"""A real Redis Cluster for the tests: three primaries, three replicas, one per session.

Tests import the fixtures explicitly (`from tests.cluster import cluster, rc`) so that only
the tests that need a cluster start one. Before each test that takes ``rc`` the cluster is
healed (killed nodes restarted, every slot served, every replica in sync) and emptied, so a
test may kill or fail over nodes freely. A primary killed by one test rejoins as a replica of
the node that replaced it: which node is primary changes, the slot ranges do not.

``tls_cluster`` is another cluster, TLS-only (three primaries, one replica each), one per
module that takes it; it skips without a TLS-capable server (fails if EDGED_REQUIRE_TLS=1).
Its certificates are ``tls_cluster_certs``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from edged.local_cluster import LocalCluster, LocalNode, TLSFiles, start_local_cluster
from tests.servers import server_binary
from tests.support import wait_for
from tests.tls import Certs, make_certs, require_tls

HEAL_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 30.0  # node timeout 2 s + election; generous for a loaded CI machine


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = start_local_cluster(server_binary(), tmp_path_factory.mktemp("cluster"),
                                primaries=3, replicas_per_primary=1)
    yield local
    local.stop()


@pytest.fixture(scope="module")
def tls_cluster_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """The test CA, the nodes' certificate (valid for 127.0.0.1), a client certificate, and
    another CA that signed none of them."""
    require_tls()
    return make_certs(tmp_path_factory.mktemp("cluster-certs"))


@pytest.fixture(scope="module")
def tls_cluster(
    tls_cluster_certs: Certs, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalCluster]:
    """A TLS-only cluster: every node listens with TLS alone and requires a client certificate
    signed by the test CA; bus, replication and MIGRATE are TLS too."""
    require_tls()
    certs = tls_cluster_certs
    local = start_local_cluster(
        server_binary(), tmp_path_factory.mktemp("tls-cluster"), primaries=3,
        replicas_per_primary=1,
        tls=TLSFiles(ca=certs.ca, cert=certs.server_cert, key=certs.server_key,
                     client_cert=certs.client_cert, client_key=certs.client_key),
    )
    yield local
    local.stop()


@pytest.fixture
def rc(cluster: LocalCluster) -> Iterator[RedisCluster]:
    """A cluster client (bytes replies) over a healthy, empty cluster."""
    heal(cluster)
    client = cluster_client(cluster)
    yield client
    client.close()


def cluster_client(cluster: LocalCluster, **kwargs: object) -> RedisCluster:
    """A cluster client (bytes replies); over TLS with the cluster's client certificate if the
    cluster is TLS-only."""
    nodes = [ClusterNode(n.host, n.port) for n in cluster.nodes]
    if cluster.tls is not None:
        kwargs = {**cluster.tls.client_kwargs(), **kwargs}
    return RedisCluster(startup_nodes=nodes, decode_responses=False, socket_timeout=5,
                        socket_connect_timeout=2, **kwargs)  # type: ignore[arg-type]


def heal(cluster: LocalCluster) -> None:
    """Restart nodes a previous test killed, wait until the cluster is ok, then empty it."""
    for node in cluster.nodes:
        if not node.alive:
            node.start()
    cluster.wait_ok(HEAL_TIMEOUT)
    for node in cluster.primaries():
        with node.client() as r:
            r.flushall()
            # So that a test reading a replica does not see the previous test's keys.
            r.execute_command("WAIT", 1, 5000)


def kill_primary_of(cluster: LocalCluster, key: str | bytes) -> LocalNode:
    """SIGKILL the primary serving ``key``'s slot; return once a replica serves it instead and
    the rest of the cluster is ok again. The killed node stays down (``start()`` it, or let the
    next test's ``rc`` restart it)."""
    slot = key_slot(key.encode() if isinstance(key, str) else key)
    victim = cluster.node_for_slot(slot)
    victim.kill()
    wait_for(lambda: _promoted(cluster, slot, victim), FAILOVER_TIMEOUT,
             what=lambda: f"a replica of {victim.address} to serve slot {slot}: "
                          f"{cluster.problem()}")
    cluster.wait_ok(FAILOVER_TIMEOUT)
    return victim


def _promoted(cluster: LocalCluster, slot: int, victim: LocalNode) -> bool:
    """Every live node names the same primary, not ``victim``, for ``slot``."""
    owners = set()
    for node in cluster.live():
        seen = node.own_view()
        if seen is None:
            return False
        owners.add(tuple(v.node_id for v in seen[1] if v.is_primary and v.serves(slot)))
    return len(owners) == 1 and len(owner := owners.pop()) == 1 and owner[0] != victim.node_id
