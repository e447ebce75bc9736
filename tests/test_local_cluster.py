"""The local cluster the cluster tests stand on: formed right, resharded by the real protocol,
failed over by a real kill, and healed by a restart (edged/local_cluster.py, tests/cluster.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterCrossSlotError

from edged.errors import EdgedError
from edged.local_cluster import (
    BUS_PORT_OFFSET,
    SLOTS,
    LocalCluster,
    free_cluster_ports,
    migrate_slot,
    parse_cluster_nodes,
    start_local_cluster,
)
from tests.cluster import cluster, cluster_client, kill_primary_of, rc  # noqa: F401
from tests.servers import server_binary

# CLUSTER KEYSLOT of a few keys: hash tags, empty and nested braces, UTF-8. Other tests may
# take these as known-good vectors.
KEYSLOT_VECTORS = {
    b"foo": 12182,
    b"bar": 5061,
    b"hello": 866,
    b"123456789": 12739,  # CRC16-XMODEM's check value 0x31C3
    b"{user1000}.following": 3443,
    b"{user1000}.followers": 3443,
    b"foo{}{bar}": 8363,  # "{}" is no tag: the whole key is hashed
    b"foo{{bar}}zap": 4015,  # the tag is "{bar"
    b"foo{bar}{zap}": 5061,  # the first tag only: "bar"
    b"edged:seen": 11980,
    b"{edged:}seen": 9296,
    b"orders": 105,
    b"{orders}:dead": 105,
    b"orders:dead": 5988,
    "é".encode(): 10180,
}


def test_every_slot_is_served_by_three_primaries_each_with_one_replica(
    cluster: LocalCluster, rc: RedisCluster,  # noqa: F811
) -> None:
    primaries, replicas = cluster.primaries(), cluster.replicas()
    assert len(primaries) == 3 and len(replicas) == 3
    with primaries[0].client() as r:
        views = {v.node_id: v for v in parse_cluster_nodes(r.execute_command("CLUSTER", "NODES"))}
    served = sorted(r for p in primaries for r in views[p.node_id].slots)
    assert sum(high - low + 1 for low, high in served) == SLOTS
    assert [r[0] for r in served] == [0, *(high + 1 for _, high in served[:-1])]  # no gap
    assert sorted(views[r.node_id].master_id for r in replicas) == sorted(
        p.node_id for p in primaries)
    for replica in replicas:
        with replica.client() as r:
            assert r.info("replication")["master_link_status"] == "up"


def test_a_key_written_through_the_cluster_client_reads_back(rc: RedisCluster) -> None:  # noqa: F811
    for i in range(20):  # enough keys to reach every primary
        rc.set(f"k{i}", f"v{i}")
    assert [rc.get(f"k{i}") for i in range(20)] == [f"v{i}".encode() for i in range(20)]


def test_cluster_keyslot_agrees_with_the_vectors(rc: RedisCluster) -> None:  # noqa: F811
    for key, slot in KEYSLOT_VECTORS.items():
        assert rc.execute_command("CLUSTER KEYSLOT", key) == slot, key
        assert key_slot(key) == slot, key


def test_migrate_slot_moves_a_stream_and_clients_follow_ask(
    cluster: LocalCluster, rc: RedisCluster,  # noqa: F811
) -> None:
    key = b"mig:stream"
    slot = key_slot(key)
    ids = [rc.xadd(key, {b"n": str(i).encode()}) for i in range(100)]
    source = cluster.node_for_slot(slot)
    target = next(p for p in cluster.primaries() if p is not source)
    asked: list[bool] = []

    def mid_migration() -> None:
        # The key has moved, the slot not yet: its old owner sends clients to the new one.
        with source.client() as r, pytest.raises(AskError):
            r.xlen(key)
        asked.append(rc.xlen(key) == 100)

    migrate_slot(cluster, slot, target, pause=mid_migration)
    try:
        assert asked == [True]
        assert cluster.node_for_slot(slot) is target
        with target.client() as r:
            entries = r.xrange(key)
        assert [e[0] for e in entries] == ids
        assert [e[1] for e in entries] == [{b"n": str(i).encode()} for i in range(100)]
        assert [e[0] for e in rc.xrange(key) or []] == ids
    finally:
        # Leave the even split other tests count on.
        migrate_slot(cluster, slot, source)


def test_killing_a_primary_promotes_its_replica_and_keeps_acknowledged_writes(
    cluster: LocalCluster, rc: RedisCluster,  # noqa: F811
) -> None:
    key = "failover:k"
    slot = key_slot(key.encode())
    primary = cluster.node_for_slot(slot)
    with primary.client() as r:
        r.set(key, "kept")
        r.xadd("{failover:k}:s", {"n": "1"})
        assert r.execute_command("WAIT", 1, 5000) == 1  # on the replica before the kill

    victim = kill_primary_of(cluster, key)

    assert victim is primary and not victim.alive
    promoted = cluster.node_for_slot(slot)
    assert promoted is not victim and promoted.role == "primary"
    with cluster_client(cluster) as fresh:
        assert fresh.get(key) == b"kept"
        assert fresh.xlen("{failover:k}:s") == 1


def test_a_killed_primary_restarts_and_rejoins_as_a_replica(
    cluster: LocalCluster, rc: RedisCluster,  # noqa: F811
) -> None:
    key = "rejoin:k"
    with cluster.node_for_slot(key_slot(key.encode())).client() as r:
        r.set(key, "v")
        assert r.execute_command("WAIT", 1, 5000) == 1
    victim = kill_primary_of(cluster, key)

    victim.start()
    cluster.wait_ok(30)

    assert victim in cluster.replicas()
    with victim.client() as r:
        r.execute_command("READONLY")  # a cluster replica serves reads only when asked to
        assert r.get(key) == b"v"


def test_free_cluster_ports_leave_room_for_the_bus() -> None:
    ports = free_cluster_ports(6)
    claimed = ports + [p + BUS_PORT_OFFSET for p in ports]
    assert len(set(claimed)) == 12
    assert all(20000 <= p <= 45000 for p in ports)


def test_a_node_that_cannot_start_is_named_with_its_log(tmp_path: Path) -> None:
    [port] = free_cluster_ports(1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with pytest.raises(EdgedError) as failed:
            start_local_cluster(server_binary(), tmp_path, primaries=1, replicas_per_primary=0,
                                ports=[port])
    message = str(failed.value)
    assert f"port {port}" in message and "server.log" in message
    assert "in use" in message.lower()


def test_a_single_primary_cluster_serves_every_slot(tmp_path: Path) -> None:
    local = start_local_cluster(server_binary(), tmp_path, primaries=1, replicas_per_primary=0)
    try:
        with local.nodes[0].client() as r:
            assert r.execute_command("CLUSTER", "INFO").count(b"cluster_slots_ok:16384") == 1
            r.set("a", "1")
            with pytest.raises(ClusterCrossSlotError):
                r.mset({"a": "1", "b": "2"})
    finally:
        local.stop()
    assert all(not n.alive for n in local.nodes)


def test_a_stopped_cluster_restarts_from_its_data_dirs(tmp_path: Path) -> None:
    """`edged start --embedded --cluster` again: same ports, same dirs, nothing formed anew."""
    ports = free_cluster_ports(2)
    local = start_local_cluster(server_binary(), tmp_path, primaries=1, replicas_per_primary=1,
                                ports=ports)
    try:
        ids = [n.node_id for n in local.nodes]
        with local.node_for_slot(0).client() as r:
            r.set("kept", "yes")
    finally:
        local.stop()
    again = start_local_cluster(server_binary(), tmp_path, primaries=1, replicas_per_primary=1,
                                ports=ports)
    try:
        assert [n.node_id for n in again.nodes] == ids
        with again.node_for_slot(0).client() as r:
            assert r.get("kept") == b"yes"
        assert len(again.replicas()) == 1
    finally:
        again.stop()
