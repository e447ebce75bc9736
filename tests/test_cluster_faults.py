"""Faults on a real Redis Cluster: a primary SIGKILLed, a slot migrated, while edged consumes.

Two daemons read streams on every primary; a producer thread publishes to them one entry at a
time with ``wait_replicas=1`` through edged.publish (WAIT on the stream's primary). What must
hold is the at-least-once promise: every WAIT-acknowledged entry is handled, every PEL drains,
and no daemon exits. The figures (kill → first entry handled on the promoted replica) are
printed for the closing notes, never asserted.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.cluster import RedisCluster

from edged.ids import id_ms
from edged.local_cluster import LocalCluster, migrate_slot
from edged.sharding import key_slot, shard_names
from tests.cluster import cluster, kill_primary_of, rc  # noqa: F401 - fixtures
from tests.servers import Server
from tests.support import DaemonProcess, Fleet, wait_for
from tests.test_cluster import cluster_table, handled, on_three_primaries, stream_cfg

GROUP = "edged"


class Producer:
    """Publishes one entry at a time to each stream in turn, in a thread, through the cluster.

    ``acked[stream]`` are the ids whose publish returned (WAIT saw the replicas asked for);
    entries that raised (NotReplicated, a connection reset during the failover) are not
    counted: nothing is promised for them.
    """

    def __init__(self, cluster: LocalCluster, streams: list[str], wait_replicas: int = 1,  # noqa: F811
                 interval: float = 0.01) -> None:
        self.seeds = cluster.seeds()
        self.streams = streams
        self.wait_replicas = wait_replicas
        self.interval = interval
        self.acked: dict[str, list[str]] = {s: [] for s in streams}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: anyio.run(self._main), daemon=True)
        self.crashed: BaseException | None = None

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=20)
        assert not self._thread.is_alive(), "the producer did not stop"
        assert self.crashed is None, f"the producer crashed: {self.crashed!r}"

    def count(self, stream: str, since_ms: int = 0) -> int:
        with self._lock:
            return sum(1 for i in self.acked[stream] if id_ms(i) >= since_ms)

    async def _main(self) -> None:
        from edged.config import ClusterConfig, RedisConfig
        from edged.connect.client import make_client
        from edged.publish import publish

        client = make_client(RedisConfig(cluster=ClusterConfig(nodes=self.seeds)),
                             socket_timeout=2.0)
        seq = 0
        try:
            while not self._stop.is_set():
                for stream in self.streams:
                    seq += 1
                    body = json.dumps({"seq": seq}).encode()
                    try:
                        ids = await publish(client, stream, [body],
                                            wait_replicas=self.wait_replicas, wait_timeout=0.5)
                    except Exception as exc:  # unknown outcome: not promised
                        with self._lock:
                            self.errors.append(f"{stream}: {type(exc).__name__}: {exc}")
                        await anyio.sleep(0.05)
                        continue
                    with self._lock:
                        self.acked[stream].extend(ids)
                await anyio.sleep(self.interval)
        except BaseException as exc:
            self.crashed = exc
            raise
        finally:
            await client.aclose()


def start_fleet(cluster: LocalCluster, server: Server, tmp_path: Path,  # noqa: F811
                spawned: list[DaemonProcess], streams: list[str],
                cfgs: list[dict[str, Any]] | None = None) -> list[DaemonProcess]:
    fleet = Fleet(server.url, tmp_path, spawned, redis=cluster_table(cluster))
    cfgs = cfgs or [stream_cfg(s) for s in streams]
    daemons = [fleet.start(name, cfgs) for name in ("a", "b")]
    for d in daemons:
        d.wait_ready()
    return daemons


def assert_all_handled(r: redis.Redis, rc: RedisCluster, producer: Producer,  # noqa: F811
                       daemons: list[DaemonProcess]) -> None:
    logs = lambda: "\n".join(d.output()[-3000:] for d in daemons)  # noqa: E731
    for s, ids in producer.acked.items():
        wait_for(lambda s=s, ids=ids: not set(ids) - set(handled(r, s)), 60,
                 what=lambda s=s, ids=ids: f"{s}: acked but never handled: "
                                           f"{sorted(set(ids) - set(handled(r, s)))[:10]}\n{logs()}")
        wait_for(lambda s=s: rc.xpending(s, GROUP)["pending"] == 0, 60,
                 what=lambda s=s: f"{s}: PEL drained: {rc.xpending(s, GROUP)}\n{logs()}")
    for d in daemons:
        assert d.proc.poll() is None, f"a daemon exited:\n{d.output()}"


def first_handled_after(r: redis.Redis, stream: str, ms: int) -> bool:
    return any(id_ms(i) > ms for i in handled(r, stream))


@pytest.mark.parametrize("layout", ["streams", "shards"])
def test_primary_sigkilled_while_consuming_loses_no_wait_acknowledged_entry(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis, layout: str,
) -> None:
    """The primary of one stream's slot is SIGKILLed while two daemons consume and the
    producer publishes with --wait-replicas 1; its replica is promoted; then the killed node
    comes back as a replica. ``streams``: three streams, one per primary; ``shards``: one
    logical stream of 6 shards (two per primary) with one shared concurrency budget.

    Must hold: every WAIT-acknowledged entry of every stream (shard) is handled; every PEL
    drains; entries published to the promoted replica are handled; the other streams (shards)
    go on while the slot has no primary; neither daemon exits."""
    prefix = f"ck{tmp_path.name[-6:].replace('_', '')}"
    cfgs = None
    if layout == "shards":
        streams = shard_names(prefix, 6)
        cfgs = [stream_cfg(prefix, shards=6, concurrency=8)]
    else:
        streams = on_three_primaries(cluster, prefix + ":")
    victim_stream = streams[0]
    victim_node = cluster.node_for_slot(key_slot(victim_stream))
    others = [s for s in streams if cluster.node_for_slot(key_slot(s)) is not victim_node]
    daemons = start_fleet(cluster, server, tmp_path, spawned, streams, cfgs)
    with Producer(cluster, streams) as producer:
        wait_for(lambda: all(producer.count(s) >= 20 for s in streams), 30,
                 what=lambda: f"20 acked each: {[producer.count(s) for s in streams]}")
        kill_ms = int(time.time() * 1000)
        started = time.monotonic()
        # Watch for the first entry handled on the promoted replica while the kill waits for
        # the promotion, so the figure printed below is not bounded by that wait.
        first_seen: list[float] = []
        # Ids 100 ms past the kill: only the promoted replica can have taken those (the old
        # primary may take entries in the moment between the clock read and the SIGKILL).
        watcher = threading.Thread(target=lambda: first_seen.append(wait_for(
            lambda: first_handled_after(r, victim_stream, kill_ms + 100) and time.monotonic(),
            90)), daemon=True)
        watcher.start()
        victim = kill_primary_of(cluster, victim_stream)
        promoted = time.monotonic()
        promoted_ms = int(time.time() * 1000)
        # The others were served while the slot had no primary (cluster-require-full-coverage
        # no): entries acked between the kill and the promotion.
        during = [producer.count(s, kill_ms) - producer.count(s, promoted_ms) for s in others]
        assert all(n > 0 for n in during), f"acked during the failover: {during}"
        wait_for(lambda: first_handled_after(r, victim_stream, kill_ms), 60,
                 what=lambda: f"an entry of {victim_stream} published after the kill handled\n"
                              + "\n".join(d.output()[-3000:] for d in daemons))
        watcher.join(30)
        handled_again = first_seen[0] if first_seen else time.monotonic()
        victim.start()  # back as a replica of the promoted one: WAIT 1 succeeds again
        cluster.wait_ok(30)
        wait_for(lambda: producer.count(victim_stream, kill_ms) >= 10, 30,
                 what=lambda: f"acked on the promoted primary: {producer.count(victim_stream, kill_ms)}"
                              f"; errors {producer.errors[-3:]}")
    assert_all_handled(r, rc, producer, daemons)
    print(f"\nfailover ({layout}): kill → promoted {promoted - started:.2f}s, kill → first entry handled on "
          f"the promoted replica {handled_again - started:.2f}s; acked "
          f"{sum(len(v) for v in producer.acked.values())}, lost 0; publish errors "
          f"{len(producer.errors)}")


def test_slot_migrated_while_consumed_loses_nothing(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """The slot of a consumed stream (and of its dead-letter stream) is migrated to another
    primary by the resharding protocol, one key per MIGRATE with pauses in between, so the
    daemons and the producer meet ASK and then MOVED; then it is migrated back.

    Must hold: every WAIT-acknowledged entry is handled, the PEL drains, the slot is back on
    its first primary, the dead-letter stream moved with it and still holds the one entry
    rejected before the move, and neither daemon exits."""
    streams = on_three_primaries(cluster, f"cm:{tmp_path.name[-6:]}:")
    stream = streams[0]
    slot = key_slot(stream)
    daemons = start_fleet(cluster, server, tmp_path, spawned, streams)
    dead = "{" + stream + "}:dead"
    with Producer(cluster, streams) as producer:
        wait_for(lambda: producer.count(stream) >= 20, 30, what="20 acked before the move")
        rc.xadd(stream, {"payload": json.dumps({"reject": "mid-migration"})})
        wait_for(lambda: rc.exists(dead) == 1, 30, what="the dead-letter stream exists")
        source = cluster.node_for_slot(slot)
        target = next(n for n in cluster.primaries() if n is not source)
        moved_ms = int(time.time() * 1000)

        def let_clients_run() -> None:
            marks = producer.count(stream)
            wait_for(lambda: producer.count(stream) > marks or producer.errors, 10,
                     what="the producer got through mid-migration")

        migrate_slot(cluster, slot, target, keys_batch=1, pause=let_clients_run)
        wait_for(lambda: producer.count(stream, moved_ms) >= 20, 30,
                 what=lambda: f"acked after the move: {producer.count(stream, moved_ms)}; "
                              f"errors {producer.errors[-3:]}")
        migrate_slot(cluster, slot, source, keys_batch=1, pause=let_clients_run)
    assert_all_handled(r, rc, producer, daemons)
    assert cluster.node_for_slot(slot) is source
    dead_entries: Any = rc.xrange(dead)
    assert [e[1][b"edged-reason"] for e in dead_entries] == [b"rejected: mid-migration"]


def test_manual_failover_unblocks_readers_without_degrading(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """CLUSTER FAILOVER on the replica of a consumed stream's primary: the old primary is
    demoted while the daemons' XREADGROUP BLOCK waits on it, and answers UNBLOCKED.

    Must hold: the daemons take that as a failover (retry, follow MOVED to the new primary),
    not as a fault of the stream: no ERROR and no degraded stream in their logs; entries
    published after the switch are handled; every PEL drains; no daemon exits."""
    streams = on_three_primaries(cluster, f"cu:{tmp_path.name[-6:]}:")
    stream = streams[0]
    daemons = start_fleet(cluster, server, tmp_path, spawned, streams)
    old = cluster.node_for_slot(key_slot(stream))
    replica = next(n for n in cluster.replicas()
                   if (view := n.own_view()) is not None and view[0].master_id == old.node_id)
    with Producer(cluster, streams, wait_replicas=0) as producer:
        wait_for(lambda: producer.count(stream) >= 20, 30, what="20 published before")
        with replica.client(10) as c:
            c.execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: cluster.node_for_slot(key_slot(stream)) is replica, 30,
                 what=lambda: f"the replica took over: {cluster.problem()}")
        switched_ms = int(time.time() * 1000)
        wait_for(lambda: first_handled_after(r, stream, switched_ms), 30,
                 what=lambda: "an entry published after the switch handled\n"
                              + "\n".join(d.output()[-3000:] for d in daemons))
        cluster.wait_ok(30)
    assert_all_handled(r, rc, producer, daemons)
    for d in daemons:
        out = d.output()
        assert " ERROR " not in out and "degraded" not in out.lower(), out[-4000:]
