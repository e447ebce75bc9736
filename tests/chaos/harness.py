"""One seeded fault run against real processes, then the check (tests/chaos/checker.py).

Setup: a data server with AOF (`--appendonly yes --appendfsync always`) on a free loopback
port, or with ``--sentinel`` a primary, a replica and three sentinels
(tests/sentinel_cluster.py), or with ``--cluster`` a Redis Cluster of three primaries and three
replicas (edged.local_cluster); a separate plain ledger server, never faulted, on which the
producer records acknowledged publishes and the handler (tests/chaos/handler.py) records every
run; three streams (with ``--cluster`` one of them a sharded logical stream of six shards);
three `python -m edged start` daemons sharing one group on all of them.

While the run lasts a producer thread publishes entries carrying a unique sequence number,
and the fault plan, drawn up front from ``random.Random(seed)``, is played: SIGKILL, SIGSTOP
(SIGCONT after a pause) and SIGTERM of daemons, which are restarted under the same or a new
consumer name; SIGKILL or SIGTERM of the data server, started again on its port and data
directory; with ``--sentinel``, SIGKILL of the primary (restarted as a replica once the
sentinels have promoted the other) and SIGSTOP/SIGCONT of the primary; with ``--cluster``,
SIGKILL of a primary (restarted once its replica is promoted: it rejoins as a replica), short
SIGSTOPs of a primary and long ones that end in a failover (the old primary is demoted after
SIGCONT), and the migration of a consumed stream's slot to another primary. Each fault is
printed with its time, so a run can be replayed with ``--seed``.

Then: faults stop and everything is restored, the producer stops, the harness waits (with a
deadline) until every group has delivered everything and its pending list is empty, stops
the daemons with SIGTERM and checks the history. Exit status: 0 clean, 1 the checker found
something, 2 the harness itself could not run the history.

Every process started here is stopped by its pid at the end, also on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from edged.keys import DEAD_DELIVERIES, DEAD_ID, DEAD_REASON, DEAD_STREAM, PAYLOAD_FIELD
from edged.local_cluster import LocalCluster, LocalNode, migrate_slot, start_local_cluster
from edged.naming import dead_letter_names
from edged.sharding import key_slot, shard_for_key, shard_names
from tests.chaos.checker import DeadLetter, Report, SelfExit, check
from tests.chaos.handler import RUNS_KEY
from tests.sentinel_cluster import SentinelCluster, write_sentinel_config
from tests.servers import Server, free_port, server_binary
from tests.support import DaemonProcess, test_env, wait_for, write_config

GROUP = "edged"
HANDLER = "tests.chaos.handler:record"
PUBLISHED_KEY = "chaos:published"
UNACKED_KEY = "chaos:unacked"
INJECTED_KEY = "chaos:injected"
THIEF = "chaos-thief"
AOF = ["--appendonly", "yes", "--appendfsync", "always"]

DAEMONS = 3
CLAIM_IDLE = "2s"
CLAIM_INTERVAL = "500ms"
MAX_DELIVERIES = 100  # far more than faults alone can burn: only a bug dead-letters here
SHUTDOWN_GRACE = 5.0
WARMUP = 3.0  # seconds of calm before the first fault
WAIT_TIMEOUT_MS = 500  # the producer's WAIT 1 under Sentinel

# kind -> (weight, shortest pause, longest pause). The pause is: until the restart (daemon
# kill/term), until SIGCONT (stops), how long the server stays down (server kill/term), from
# the promotion of the other server until the killed primary is restarted as a replica.
DAEMON_FAULTS = {
    "daemon-kill": (3, 0.0, 3.0),
    "daemon-stop": (3, 0.5, 6.0),
    "daemon-term": (2, 0.0, 3.0),
}
SERVER_FAULTS = {
    "server-kill": (1, 0.5, 6.0),
    "server-term": (1, 0.5, 6.0),
}
SENTINEL_FAULTS = {
    "primary-kill": (1, 1.0, 5.0),
    "primary-stop": (1, 0.5, 6.0),
    # A hung sentinel (SIGSTOP: it accepts connections and never answers), alone or under a
    # primary fault: lookups and the +switch-master subscriptions must not wait for it.
    "sentinel-stop": (1, 3.0, 12.0),
}
# How long a sentinel stays in TILT mode after its timer jumped (Sentinel's fixed 30 s), with a
# margin for a loaded machine.
SENTINEL_TILT_PERIOD = 35.0
# --cluster. The pause is: from the promotion of the replica until the killed primary is
# started again (primary-kill); until SIGCONT, under the node timeout so that no failover
# starts (primary-stop); from the promotion of the replica until SIGCONT (primary-stop-long:
# the old primary wakes up as a primary nobody follows any more, and is demoted); between
# the MIGRATE batches of one key each (slot-migrate: clients meet ASK meanwhile).
CLUSTER_FAULTS = {
    "primary-kill": (2, 1.0, 5.0),
    "primary-stop": (1, 0.3, 1.5),
    "primary-stop-long": (2, 0.0, 3.0),
    "slot-migrate": (2, 0.5, 2.5),
}
# What a failing Redis command raises; redis-py's cluster client also raises
# RedisClusterException (no slot map, a slot without a node), which is not a RedisError.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)
CLUSTER_SHARDS = 6  # the sharded logical stream chaos:s0 under --cluster
NODE_TIMEOUT_MS = 2000  # cluster-node-timeout: a primary silent this long is failed over
CLUSTER_DEADLINE = 90.0  # the longest a failover, a rejoin or a healing may take
PUBLISH_DEADLINE = 15.0  # one publish on the cluster, redirects and relearning included


class HarnessError(Exception):
    """The history could not be run as planned (not a verdict about edged)."""


# --------------------------------------------------------------------------- the plan


@dataclass
class Fault:
    at: float  # seconds after the start of the run
    kind: str
    slot: int  # which daemon (daemon faults)
    pause: float
    same_name: bool  # restart a daemon under the same consumer name; slot-migrate: which target
    pick: float = 0.0  # --cluster: which physical stream (its primary, its slot), in [0, 1)

    def describe(self) -> str:
        if self.kind.startswith("daemon"):
            how = {"daemon-kill": "SIGKILL", "daemon-stop": "SIGSTOP", "daemon-term": "SIGTERM"}
            then = (f"SIGCONT after {self.pause:.1f}s" if self.kind == "daemon-stop" else
                    f"restart after {self.pause:.1f}s as "
                    f"{'the same consumer' if self.same_name else 'a new consumer'}")
            return f"{how[self.kind]} daemon slot {self.slot}, {then}"
        return {
            "server-kill": f"SIGKILL the server, start it again after {self.pause:.1f}s",
            "server-term": f"SIGTERM the server, start it again after {self.pause:.1f}s",
            "primary-kill": f"SIGKILL the primary, restart it as a replica {self.pause:.1f}s "
                            f"after the failover",
            "primary-stop": f"SIGSTOP the primary, SIGCONT after {self.pause:.1f}s",
            "sentinel-stop": f"SIGSTOP sentinel {self.slot % 3}, SIGCONT after "
                             f"{self.pause:.1f}s",
            "primary-stop-long": f"SIGSTOP the primary until its replica is promoted, SIGCONT "
                                 f"{self.pause:.1f}s later (it must be demoted)",
            "slot-migrate": f"migrate a stream's slot to another primary, one key per MIGRATE, "
                            f"{self.pause:.1f}s between batches",
        }[self.kind]


def plan(seed: int, duration: float, sentinel: bool, cluster: bool = False) -> list[Fault]:
    """The fault schedule: a pure function of the seed, the duration and the mode.

    Every fault draws the same number of values, so a seed gives the same plan each time
    (``--cluster`` draws one more per fault, which stream it aims at; the other modes' plans
    are what they always were).
    """
    rng = random.Random(seed)
    server_faults = CLUSTER_FAULTS if cluster else SENTINEL_FAULTS if sentinel else SERVER_FAULTS
    kinds = {**DAEMON_FAULTS, **server_faults}
    names = sorted(kinds)
    weights = [kinds[k][0] for k in names]
    faults: list[Fault] = []
    t = WARMUP
    while True:
        t += rng.uniform(1.0, 4.0)
        kind = rng.choices(names, weights)[0]
        slot = rng.randrange(DAEMONS)
        u = rng.random()
        same = rng.random() < 0.5
        pick = round(rng.random(), 4) if cluster else 0.0
        if t >= duration:
            return faults
        lo, hi = kinds[kind][1:]
        faults.append(Fault(round(t, 2), kind, slot, round(lo + u * (hi - lo), 2), same, pick))


# --------------------------------------------------------------------------- servers


def fast_client(port: int) -> redis.Redis:
    """One attempt, short timeouts: a paused server must not stall the harness."""
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                       retry=Retry(NoBackoff(), 0))


class Standalone:
    """The data server: one server with AOF, restarted on the same port and directory."""

    sentinel = False

    def __init__(self, base: Path) -> None:
        self.server = Server(port=free_port(), data_dir=base / "data", extra=list(AOF))
        self.retired: list[Server] = []
        self.busy = False  # a server fault is in progress

    def start(self) -> None:
        self.server.start()

    def describe(self) -> str:
        return f"server {self.server.url} (AOF, appendfsync always)"

    def primary_port(self) -> int | None:
        return None if self.busy else self.server.port

    def quiet(self) -> bool:
        return not self.busy

    def client(self) -> redis.Redis:
        return fast_client(self.server.port)

    def producer_client(self) -> redis.Redis:
        return fast_client(self.server.port)

    def write_config(self, path: Path, streams: list[dict[str, Any]],
                     daemon: dict[str, Any]) -> None:
        write_config(path, streams, daemon=daemon, redis={"url": self.server.url})

    def stop(self) -> None:
        for srv in [*self.retired, self.server]:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.proc.send_signal(signal.SIGCONT)
            srv.stop()

    def restart(self) -> None:
        self.retired.append(self.server)
        self.server = Server(port=self.server.port, data_dir=self.server.data_dir,
                             extra=list(AOF)).start()


class SentinelTarget:
    """A primary, a replica and three sentinels (tests/sentinel_cluster.py)."""

    sentinel = True

    def __init__(self, base: Path) -> None:
        self.cluster = SentinelCluster(base / "cluster")
        self.busy = False

    def start(self) -> None:
        self.cluster.start()

    def describe(self) -> str:
        ports = ", ".join(str(p) for p in self.cluster.servers)
        return (f"sentinel service {self.cluster.service}: servers {ports}, sentinels "
                f"{', '.join(self.cluster.sentinel_hosts)}")

    def primary_port(self) -> int | None:
        return self.cluster.primary_port()

    def quiet(self) -> bool:
        return not self.busy and self.cluster.healthy() is not None

    def client(self) -> redis.Redis:
        port = self.cluster.primary_port()
        if port is None:
            raise redis.ConnectionError("the sentinels do not agree on a primary")
        return fast_client(port)

    def producer_client(self) -> redis.Redis:
        hosts = [(h.split(":")[0], int(h.split(":")[1])) for h in self.cluster.sentinel_hosts]
        sentinel = Sentinel(hosts, socket_timeout=1, sentinel_kwargs={"socket_timeout": 1})
        return sentinel.master_for(self.cluster.service, socket_timeout=2,
                                   socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))

    def write_config(self, path: Path, streams: list[dict[str, Any]],
                     daemon: dict[str, Any]) -> None:
        write_sentinel_config(path, self.cluster, streams, daemon=daemon)

    def stop(self) -> None:
        self.cluster.stop()


T = TypeVar("T")


class ClusterAborted(Exception):
    """The run is ending (an error, Ctrl-C): a cluster fault in progress stops where it is."""


class ClusterTarget:
    """Three primaries and three replicas (edged.local_cluster), node timeout 2 s.

    A cluster fault is a story of several steps with waits in between (kill, wait for the
    promotion, restart, wait until the node rejoined and the cluster is ok), so it runs in a
    worker thread while the main loop goes on with the daemon faults; one at a time (``busy``).
    Every wait has a deadline; a missed one is a HarnessError, reported by the main loop.
    """

    sentinel = False

    def __init__(self, base: Path) -> None:
        self.base = base / "cluster"
        self._cluster: LocalCluster | None = None
        self.busy = False  # a cluster fault is in progress (or failed)
        self.paused: set[LocalNode] = set()  # SIGSTOPped nodes
        self.worker: threading.Thread | None = None
        self.failed: BaseException | None = None
        self.closing = threading.Event()

    @property
    def cluster(self) -> LocalCluster:
        if self._cluster is None:
            raise HarnessError("the cluster was not started")
        return self._cluster

    def start(self) -> None:
        self._cluster = start_local_cluster(server_binary(), self.base, primaries=3,
                                            replicas_per_primary=1,
                                            node_timeout_ms=NODE_TIMEOUT_MS, timeout=60)

    def describe(self) -> str:
        return "cluster " + ", ".join(f"{n.address} ({n.role}, pid {n.pid})"
                                      for n in self.cluster.nodes)

    def primary_port(self) -> int | None:
        return None

    def quiet(self) -> bool:
        return not self.busy and self.cluster.problem() is None

    def client(self) -> Any:
        """A cluster client (redis-py's, bytes replies) that fails fast enough for the polls."""
        nodes = [ClusterNode(n.host, n.port) for n in self.cluster.nodes]
        return RedisCluster(startup_nodes=nodes, socket_timeout=5, socket_connect_timeout=2,
                            require_full_coverage=False)

    def write_config(self, path: Path, streams: list[dict[str, Any]],
                     daemon: dict[str, Any]) -> None:
        """A daemon config with a ``[redis.cluster]`` table of every node as a seed."""
        write_config(path, streams, daemon=daemon)
        seeds = ", ".join(f'"{seed}"' for seed in self.cluster.seeds())
        path.write_text(f"[redis.cluster]\nnodes = [{seeds}]\n" + path.read_text())

    # ------------------------------------------------------------ the worker

    def launch(self, what: str, body: Callable[[], None], log: Callable[[str], None]) -> bool:
        """Run one cluster fault in the worker thread; False if one is still in progress."""
        if self.busy or self.closing.is_set():
            return False
        self.busy = True

        def main() -> None:
            try:
                body()
            except ClusterAborted:
                return
            except BaseException as exc:
                self.failed = exc
                log(f"cluster fault {what} failed: {exc}")
                return  # busy stays set: the main loop ends the run
            self.busy = False

        self.worker = threading.Thread(target=main, name=f"chaos-{what}", daemon=True)
        self.worker.start()
        return True

    def sleep(self, seconds: float) -> None:
        if self.closing.wait(max(0.0, seconds)):
            raise ClusterAborted

    def until(self, check: Callable[[], T | None], timeout: float,
              what: Callable[[], str]) -> T:
        """Poll ``check`` until it returns something; a HarnessError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if self.closing.is_set():
                raise ClusterAborted
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise HarnessError(f"timed out after {timeout:g}s waiting for {what()}")
            self.closing.wait(0.1)

    def wait_ok(self, timeout: float = CLUSTER_DEADLINE) -> None:
        """cluster.wait_ok, but abortable; the error names the node and shows its log."""
        def what() -> str:
            problem = self.cluster.problem()
            if problem is None:
                return "the cluster to be ok (it is now)"
            text = f"the cluster to be ok: {problem.text}"
            if problem.node is not None:
                text += (f"\n--- tail of {problem.node.log_path}:\n" + problem.node.log_tail())
            return text

        self.until(lambda: self.cluster.problem() is None, timeout, what)
        self.cluster.wait_ok(5)  # the library's own verdict, now that it should hold at once

    def owner(self, slot: int) -> LocalNode | None:
        """The one primary every reachable node names for ``slot``; None while they differ.

        SIGSTOPped nodes are not asked (they cannot answer)."""
        owners = set()
        for node in self.cluster.live():
            if node in self.paused:
                continue
            seen = node.own_view()
            if seen is None:
                return None
            owners.add(tuple(v.node_id for v in seen[1] if v.is_primary and v.serves(slot)))
        if len(owners) != 1 or len(ids := owners.pop()) != 1:
            return None
        return next((n for n in self.cluster.nodes if n.node_id == ids[0]), None)

    def wait_promoted(self, slot: int, victim: LocalNode) -> LocalNode:
        """Until the nodes agree on a new primary, not ``victim``, for ``slot``."""
        return self.until(lambda: (o := self.owner(slot)) is not None and o is not victim and o,
                          CLUSTER_DEADLINE,
                          lambda: f"a replica of {victim.address} to be promoted for slot {slot}: "
                                  f"{self.cluster.problem()}")

    # ------------------------------------------------------------ the faults

    def primary_kill(self, stream: str, pause: float, log: Callable[[str], None]) -> None:
        slot = key_slot(stream)
        victim = self.cluster.node_for_slot(slot)
        victim.kill()
        killed = time.monotonic()
        log(f"  SIGKILL primary {victim.address} pid {victim.pid} (slot {slot} of {stream})")
        new = self.wait_promoted(slot, victim)
        log(f"{new.address} promoted for slot {slot} {time.monotonic() - killed:.1f}s after the "
            f"kill; restarting {victim.address} in {pause:.1f}s")
        self.sleep(pause)
        if self.closing.is_set():
            raise ClusterAborted
        victim.launch()
        log(f"{victim.address} started again (pid {victim.pid}): same port and data dir")
        self.until(lambda: (seen := victim.own_view()) is not None and not seen[0].is_primary,
                   CLUSTER_DEADLINE, lambda: f"{victim.address} to rejoin as a replica")
        self.wait_ok()
        log(f"{victim.address} rejoined as a replica; cluster ok "
            f"({time.monotonic() - killed:.1f}s after the kill)")

    def primary_stop(self, stream: str, pause: float, long: bool,
                     log: Callable[[str], None]) -> None:
        slot = key_slot(stream)
        victim = self.cluster.node_for_slot(slot)
        os.kill(victim.pid, signal.SIGSTOP)
        self.paused.add(victim)
        stopped = time.monotonic()
        log(f"  SIGSTOP primary {victim.address} pid {victim.pid} (slot {slot} of {stream})")
        try:
            if long:
                new = self.wait_promoted(slot, victim)
                log(f"{new.address} promoted for slot {slot} {time.monotonic() - stopped:.1f}s "
                    f"after SIGSTOP; SIGCONT {victim.address} in {pause:.1f}s")
            self.sleep(pause)
        finally:
            os.kill(victim.pid, signal.SIGCONT)
            self.paused.discard(victim)
        log(f"SIGCONT {victim.address} pid {victim.pid} after {time.monotonic() - stopped:.1f}s")
        if long:
            self.until(lambda: (seen := victim.own_view()) is not None and not seen[0].is_primary,
                       CLUSTER_DEADLINE, lambda: f"{victim.address} to be demoted after SIGCONT")
            log(f"{victim.address} demoted to a replica")
        self.wait_ok()
        owner = self.cluster.node_for_slot(slot)
        log(f"cluster ok; slot {slot} at {owner.address}"
            + ("" if long or owner is victim else " (a failover happened after all)"))

    def slot_migrate(self, stream: str, pause: float, which: int,
                     log: Callable[[str], None]) -> None:
        slot = key_slot(stream)
        source = self.cluster.node_for_slot(slot)
        others = sorted((n for n in self.cluster.primaries() if n is not source),
                        key=lambda n: n.port)
        target = others[which % len(others)]
        log(f"  migrating slot {slot} of {stream} from {source.address} to {target.address}")
        started = time.monotonic()
        batches = 0

        def between() -> None:
            nonlocal batches
            batches += 1
            self.sleep(pause)

        migrate_slot(self.cluster, slot, target, keys_batch=1, pause=between, timeout=30)
        self.wait_ok()
        log(f"slot {slot} of {stream} now at {target.address} ({batches} key(s) moved, "
            f"{time.monotonic() - started:.1f}s); cluster ok")

    # ------------------------------------------------------------ the end

    def restore(self, log: Callable[[str], None]) -> None:
        """The fault in progress finishes (deadline), anything left paused or down is
        resumed or started, and the cluster must be ok again (deadline)."""
        deadline = time.monotonic() + 3 * CLUSTER_DEADLINE
        while self.worker is not None and self.worker.is_alive():
            if time.monotonic() > deadline:
                raise HarnessError("the last cluster fault did not finish in time")
            self.worker.join(0.2)
        if self.failed is not None:
            raise HarnessError(f"a cluster fault failed: {self.failed}")
        for node in list(self.paused):
            os.kill(node.pid, signal.SIGCONT)
            self.paused.discard(node)
            log(f"SIGCONT {node.address}")
        for node in self.cluster.nodes:
            if not node.alive:
                node.launch()
                log(f"started {node.address} again")
        self.wait_ok()
        log("cluster ok: " + ", ".join(f"{n.address} {n.role}" for n in self.cluster.nodes))

    def stop(self) -> None:
        """Every node we started stops, by its pid; a fault in progress is aborted first."""
        self.closing.set()
        if self.worker is not None:
            self.worker.join(30)
        if self._cluster is None:
            return
        for node in self._cluster.nodes:
            if node.alive:
                with contextlib.suppress(OSError):
                    os.kill(node.pid, signal.SIGCONT)
        self._cluster.stop()


Target = Standalone | SentinelTarget | ClusterTarget


# --------------------------------------------------------------------------- producer


class Producer:
    """Publishes entries ``{"seq": n, "sleep": s}`` round-robin over the streams, in a thread.

    Only an XADD the server answered is recorded in ``chaos:published`` (under Sentinel only
    when the ``WAIT 1`` that follows it on the same connection returned >= 1: replication is
    asynchronous and a failover may drop a write no replica had). A publish that raised, or
    that WAIT did not confirm, is recorded in ``chaos:unacked``: nothing is promised for it.
    The next publish always uses a new sequence number.
    """

    def __init__(self, connect: Callable[[], redis.Redis], ledger_url: str, streams: list[str],
                 seed: int, wait_replica: bool, interval: float) -> None:
        self.connect = connect
        self.ledger_url = ledger_url
        self.streams = streams
        self.rng = random.Random(f"producer-{seed}")  # its own draws: the fault plan is apart
        self.wait_replica = wait_replica
        self.interval = interval
        self.acked = 0
        self.unacked = 0
        self.crashed: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="chaos-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise HarnessError("the producer did not stop within 30s")
        if self.crashed is not None:
            raise HarnessError(f"the producer crashed: {self.crashed!r}")

    def _body(self, seq: int) -> str:
        u = self.rng.random()
        if u < 0.6:
            sleep = 0.0
        elif u < 0.95:
            sleep = round(self.rng.uniform(0.01, 0.1), 3)
        else:
            sleep = round(self.rng.uniform(0.3, 1.0), 3)
        return json.dumps({"seq": seq, "sleep": sleep})

    def _publish(self, client: redis.Redis, stream: str, body: str) -> tuple[str, bool]:
        """XADD (and WAIT under Sentinel); the id and whether it counts as acknowledged."""
        if not self.wait_replica:
            return _text(client.xadd(stream, {PAYLOAD_FIELD: body})), True
        pipe = client.pipeline(transaction=False)
        pipe.xadd(stream, {PAYLOAD_FIELD: body})
        pipe.execute_command("WAIT", 1, WAIT_TIMEOUT_MS)
        replies: Any = pipe.execute()
        raw_id, replicas = replies
        return _text(raw_id), int(replicas) >= 1

    def _main(self) -> None:
        ledger = redis.Redis.from_url(self.ledger_url, socket_timeout=10)
        client: redis.Redis | None = None
        try:
            for seq in itertools.count(1):
                if self._stop.is_set():
                    break
                stream = self.streams[seq % len(self.streams)]
                body = self._body(seq)
                try:
                    if client is None:
                        client = self.connect()
                    entry_id, acked = self._publish(client, stream, body)
                except redis.RedisError as exc:
                    ledger.rpush(UNACKED_KEY, f"{stream} - {seq} {type(exc).__name__}")
                    self.unacked += 1
                    if client is not None:
                        with contextlib.suppress(Exception):
                            client.close()
                    client = None
                    self._stop.wait(0.1)  # pacing: the server is away
                    continue
                if acked:
                    ledger.rpush(PUBLISHED_KEY, f"{stream} {entry_id} {seq}")
                    self.acked += 1
                else:
                    ledger.rpush(UNACKED_KEY, f"{stream} {entry_id} {seq} not-replicated")
                    self.unacked += 1
                self._stop.wait(self.interval)  # pacing
        except BaseException as exc:
            self.crashed = exc
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            ledger.close()


class ClusterProducer(Producer):
    """The producer under ``--cluster``: edged.publish on a cluster client made by
    edged.connect.client.make_client from the seeds, with ``wait_replicas=1`` (XADD and WAIT
    on one connection to the stream's own primary).

    ``layout`` is the logical streams with their shard counts. A sharded one is published to
    with ``publish_sharded`` and a key (``dev-<seq mod 97>``), so the physical shard is known
    before the publish (``shard_for_key``) and recorded in both ledger lists: an acknowledged
    ``"<shard> <id> <seq>"`` (the shard publish_sharded returned, which must be that one), an
    unacknowledged ``"<shard> <id or -> <seq> <why>"``. Handlers record the shard too
    (``Event.stream``), so the checker matches physical streams throughout.
    """

    def __init__(self, seeds: list[str], ledger_url: str, layout: list[tuple[str, int]],
                 seed: int, interval: float) -> None:
        super().__init__(_no_connect, ledger_url, [name for name, _ in layout], seed, True,
                         interval)
        self.seeds = seeds
        self.layout = layout
        self.errors: Counter[str] = Counter()  # why publishes were not acknowledged

    def _main(self) -> None:
        try:
            anyio.run(self._amain)
        except BaseException as exc:
            self.crashed = exc

    def _target(self, seq: int) -> tuple[str, int, str, str | None]:
        """(logical stream, shards, physical stream, key) of publish number ``seq``."""
        name, shards = self.layout[seq % len(self.layout)]
        if shards == 1:
            return name, 1, name, None
        key = f"dev-{seq % 97}"
        return name, shards, shard_names(name, shards)[shard_for_key(key, shards)], key

    async def _publish_one(self, client: Any, seq: int) -> tuple[str, str]:
        from edged.publish import publish, publish_sharded

        name, shards, physical, key = self._target(seq)
        body = self._body(seq).encode()
        with anyio.fail_after(PUBLISH_DEADLINE):
            if shards == 1:
                ids = await publish(client, name, [body], wait_replicas=1,
                                    wait_timeout=WAIT_TIMEOUT_MS / 1000)
                return physical, ids[0]
            out = await publish_sharded(client, name, shards, [body], key=key, wait_replicas=1,
                                        wait_timeout=WAIT_TIMEOUT_MS / 1000)
        if out[0].stream != physical:
            raise HarnessError(f"publish_sharded put key {key!r} in {out[0].stream}, "
                               f"not in {physical} (shard_for_key)")
        return out[0].stream, out[0].id

    async def _amain(self) -> None:
        from edged.config import ClusterConfig, RedisConfig
        from edged.connect.client import make_client
        from edged.errors import EdgedError
        from edged.publish import NotReplicated

        # What a publish whose outcome is unknown raises: refused, reset, timed out (also the
        # deadline's TimeoutError), no node for the slot, redirected too often. Anything else
        # is a bug of the harness and ends the run.
        unknown_outcome = (*REDIS_ERRORS, EdgedError, OSError, TimeoutError)

        ledger = redis.Redis.from_url(self.ledger_url, socket_timeout=10)
        client: Any = make_client(RedisConfig(cluster=ClusterConfig(nodes=self.seeds)),
                                  socket_timeout=2.0)
        try:
            for seq in itertools.count(1):
                if self._stop.is_set():
                    break
                physical = self._target(seq)[2]
                try:
                    stream, entry_id = await self._publish_one(client, seq)
                except NotReplicated as exc:  # on the primary, no replica had it in time
                    self.errors[type(exc).__name__] += 1
                    entry = exc.ids[-1] if exc.ids else "-"
                    ledger.rpush(UNACKED_KEY, f"{physical} {entry} {seq} not-replicated")
                    self.unacked += 1
                    await anyio.sleep(0.1)  # pacing: the primary has no replica right now
                    continue
                except unknown_outcome as exc:
                    self.errors[type(exc).__name__] += 1
                    ledger.rpush(UNACKED_KEY, f"{physical} - {seq} {type(exc).__name__}")
                    self.unacked += 1
                    await anyio.sleep(0.1)  # pacing: the primary is away
                    continue
                ledger.rpush(PUBLISHED_KEY, f"{stream} {entry_id} {seq}")
                self.acked += 1
                await anyio.sleep(self.interval)  # pacing
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
            ledger.close()


def _no_connect() -> redis.Redis:
    raise HarnessError("the cluster producer makes its own client")


# --------------------------------------------------------------------------- daemons


@dataclass
class Slot:
    """One of the three daemons, across its restarts."""

    index: int
    name: str = ""
    proc: DaemonProcess | None = None
    instance: int = 0
    state: str = "down"  # running | stopped | terminating | down
    termed_at: float = 0.0


@dataclass
class Options:
    seed: int
    duration: float
    sentinel: bool = False
    cluster: bool = False
    workdir: Path | None = None
    inject_loss: int = 0
    streams: int = 3
    shards: int = CLUSTER_SHARDS  # --cluster: shards of the logical stream chaos:s0
    interval: float = 0.025
    settle_timeout: float = 90.0
    summary_json: Path | None = None


@dataclass(order=True)
class Action:
    due: float
    order: int
    what: str = field(compare=False)
    fn: Callable[[], None] = field(compare=False)


class History:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.keep_workdir = opts.workdir is not None
        if opts.workdir is not None:
            opts.workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = opts.workdir
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="edged-chaos-"))
        (self.workdir / "logs").mkdir(exist_ok=True)
        (self.workdir / "conf").mkdir(exist_ok=True)
        # The logical streams and their shard counts (--cluster: chaos:s0 is sharded), and
        # the physical streams, which is what the groups, the ledger and the checker see.
        self.layout = [(f"chaos:s{i}", opts.shards if opts.cluster and i == 0 else 1)
                       for i in range(opts.streams)]
        self.streams = [p for name, n in self.layout for p in shard_names(name, n)]
        self.target: Target = (ClusterTarget(self.workdir) if opts.cluster
                               else SentinelTarget(self.workdir) if opts.sentinel
                               else Standalone(self.workdir))
        self.ledger = Server(port=free_port(), data_dir=self.workdir / "ledger")
        self.ledger_client: redis.Redis | None = None
        self.slots = [Slot(i) for i in range(DAEMONS)]
        self.daemons: list[DaemonProcess] = []  # every instance ever started, for cleanup
        self.actions: list[Action] = []
        self._order = itertools.count()
        self.self_exits: list[SelfExit] = []
        self.problems: list[str] = []
        self.producer: Producer | None = None
        self.t0 = time.monotonic()
        self.injected = 0
        self.inject_at = opts.duration * 0.4
        self.played: Counter[str] = Counter()  # faults played, by kind
        self._sentinel_tilt_until = 0.0  # monotonic time the last paused sentinel leaves TILT
        self.skipped: Counter[str] = Counter()  # faults skipped (their target was not back yet)

    # ------------------------------------------------------------------ output

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():7.2f}s] {msg}", flush=True)

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        self.ledger.start()
        self.ledger_client = self.ledger.client(decode_responses=True)
        self.target.start()
        self.log(f"data: {self.target.describe()}; ledger {self.ledger.url}")
        for slot in self.slots:
            self.spawn(slot, f"d{slot.index}")
        for slot in self.slots:
            assert slot.proc is not None
            try:
                slot.proc.wait_ready(timeout=30)
            except AssertionError as exc:
                raise HarnessError(f"daemon {slot.name} did not get ready: {exc}") from None
        self.log(f"{DAEMONS} daemons ready on {len(self.streams)} streams: "
                 + ", ".join(s.name for s in self.slots))
        if self.opts.cluster:
            for name, n in self.layout:
                where = ", ".join(f"{p} (slot {key_slot(p)})" for p in shard_names(name, n))
                self.log(f"stream {name}" + (f", {n} shards: " if n > 1 else ": ") + where)

    def stream_config(self, stream: str, shards: int = 1) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "stream": stream, "group": GROUP, "handler": HANDLER, "start-id": "0",
            "concurrency": 8, "claim-idle": CLAIM_IDLE, "claim-interval": CLAIM_INTERVAL,
            "max-deliveries": MAX_DELIVERIES, "retry-backoff": "100ms",
        }
        if shards > 1:
            cfg["shards"] = shards  # one concurrency budget over all the shards
        return cfg

    def spawn(self, slot: Slot, name: str) -> None:
        slot.instance += 1
        slot.name = name
        path = self.workdir / "conf" / f"{name}.toml"
        daemon = {"consumer": name, "shutdown-grace": f"{SHUTDOWN_GRACE:g}s",
                  "heartbeat-interval": "1s", "consumer-expiry": "10s", "listen": ""}
        self.target.write_config(path, [self.stream_config(s, n) for s, n in self.layout], daemon)
        env = test_env(EDGED_CHAOS_LEDGER=self.ledger.url, EDGED_CHAOS_CONSUMER=name)
        log_path = self.workdir / "logs" / f"slot{slot.index}.{slot.instance}.{name}.log"
        slot.proc = DaemonProcess(path, None, log_path, env=env)
        self.daemons.append(slot.proc)
        slot.state = "running"

    # ------------------------------------------------------------------ scheduling

    def later(self, delay: float, what: str, fn: Callable[[], None]) -> None:
        heapq.heappush(self.actions, Action(time.monotonic() + delay, next(self._order), what, fn))

    def run_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        due = []
        while self.actions and (everything or self.actions[0].due <= now):
            due.append(heapq.heappop(self.actions))
        for action in due:
            action.fn()

    # ------------------------------------------------------------------ self-exits

    def check_self_exits(self) -> None:
        for slot in self.slots:
            proc = slot.proc
            if proc is None or slot.state not in ("running", "stopped"):
                continue
            rc = proc.proc.poll()
            if rc is None:
                continue
            tail = "\n".join(proc.output().splitlines()[-40:])
            self.self_exits.append(SelfExit(slot.name, proc.pid, rc, round(self.elapsed(), 2),
                                            str(proc.log_path), tail))
            self.log(f"SELF-EXIT: daemon {slot.name} (pid {proc.pid}) exited {rc} by itself; "
                     f"log tail ({proc.log_path}):\n" + _indent(tail))
            slot.state = "down"
            self.spawn(slot, f"d{slot.index}-r{slot.instance + 1}")
            self.log(f"started daemon {slot.name} in slot {slot.index} in its place")

    # ------------------------------------------------------------------ faults

    def apply(self, fault: Fault) -> None:
        self.log(f"fault {fault.kind}: {fault.describe()}")
        if fault.kind.startswith("daemon"):
            played = self.daemon_fault(fault)
        elif isinstance(self.target, Standalone):
            played = self.server_fault(self.target, fault)
        elif isinstance(self.target, ClusterTarget):
            played = self.cluster_fault(self.target, fault)
        else:
            played = self.sentinel_fault(self.target, fault)
        (self.played if played else self.skipped)[fault.kind] += 1

    def sentinel_stop(self, cluster: SentinelCluster, fault: Fault) -> bool:
        """Hang one sentinel for a while; primary faults may come meanwhile (the two others
        keep the quorum of 2). One at a time, and not while an earlier one is in TILT mode: a
        sentinel whose timer jumped (as after a SIGSTOP) takes no part in a failover for 30 s
        after it wakes. Two sentinels of three in TILT at once leave no quorum, and when they
        come back the replica has been cut off from the dead primary for longer than they
        accept ("-failover-abort-no-good-slave"): no failover ever. That is three faulty
        sentinels of three, not the one bad sentinel edged must survive."""
        if cluster.paused:
            self.log("  skipped: a sentinel is already paused")
            return False
        if time.monotonic() < self._sentinel_tilt_until:
            self.log("  skipped: the sentinel paused last is still in TILT mode")
            return False
        index = fault.slot % len(cluster.sentinels)
        pid = cluster.pause_sentinel(index)
        self.log(f"  SIGSTOP sentinel {index} pid {pid}")

        def resume() -> None:
            cluster.resume_sentinel(index)
            self._sentinel_tilt_until = time.monotonic() + SENTINEL_TILT_PERIOD
            self.log(f"SIGCONT sentinel {index} pid {pid}")

        self.later(fault.pause, "SIGCONT sentinel", resume)
        return True

    def daemon_fault(self, fault: Fault) -> bool:
        # The planned slot, else the next running one (a paused or restarting daemon is not
        # faulted again until it is back).
        order = [self.slots[(fault.slot + i) % DAEMONS] for i in range(DAEMONS)]
        slot = next((s for s in order if s.state == "running" and s.proc is not None), None)
        if slot is None or slot.proc is None:
            self.log("  skipped: no daemon is running")
            return False
        if slot.index != fault.slot:
            self.log(f"  slot {fault.slot} is {self.slots[fault.slot].state}: "
                     f"slot {slot.index} instead")
        proc = slot.proc
        if fault.kind == "daemon-stop":
            os.kill(proc.pid, signal.SIGSTOP)
            slot.state = "stopped"
            self.log(f"  SIGSTOP {slot.name} pid {proc.pid}")

            def resume() -> None:
                if slot.state == "stopped" and slot.proc is proc:
                    os.kill(proc.pid, signal.SIGCONT)
                    slot.state = "running"
                    self.log(f"SIGCONT {slot.name} pid {proc.pid}")

            self.later(fault.pause, "SIGCONT", resume)
            return True
        if fault.kind == "daemon-kill":
            slot.state = "down"
            proc.proc.kill()
            proc.proc.wait()
            self.log(f"  SIGKILL {slot.name} pid {proc.pid}")
        else:
            slot.state = "terminating"
            slot.termed_at = time.monotonic()
            proc.signal(signal.SIGTERM)
            self.log(f"  SIGTERM {slot.name} pid {proc.pid}")
        self.later(fault.pause, "restart", lambda: self.restart(slot, proc, fault.same_name))
        return True

    def restart(self, slot: Slot, proc: DaemonProcess, same_name: bool) -> None:
        if slot.proc is not proc:
            return
        if slot.state == "terminating":
            rc = proc.proc.poll()
            if rc is None:
                if time.monotonic() - slot.termed_at < SHUTDOWN_GRACE + 15:
                    self.later(0.2, "restart", lambda: self.restart(slot, proc, same_name))
                    return
                self.problems.append(f"{slot.name} (pid {proc.pid}) still ran "
                                     f"{SHUTDOWN_GRACE + 15:g}s after SIGTERM; killed")
                self.log(f"{slot.name} did not stop after SIGTERM; SIGKILL; log tail:\n"
                         + _indent(_tail(proc)))
                proc.proc.kill()
                proc.proc.wait()
            else:
                took = time.monotonic() - slot.termed_at
                # A daemon SIGTERMed before it installed its handlers dies of the signal (-15).
                self.log(f"{slot.name} exited {rc} after SIGTERM ({took:.1f}s)")
            slot.state = "down"
        name = slot.name if same_name else f"d{slot.index}-r{slot.instance + 1}"
        self.spawn(slot, name)
        self.log(f"restarted slot {slot.index} as {name} (pid {slot.proc.pid if slot.proc else '?'})")

    def server_fault(self, target: Standalone, fault: Fault) -> bool:
        if target.busy:
            self.log("  skipped: the server is already down")
            return False
        srv = target.server
        target.busy = True
        if fault.kind == "server-kill":
            srv.kill()
            self.log(f"  SIGKILL server pid {srv.pid} (port {srv.port})")
        else:
            srv.stop()
            self.log(f"  SIGTERM server pid {srv.pid} (port {srv.port}), exited "
                     f"{srv.proc.returncode if srv.proc else '?'}")

        def start_again() -> None:
            target.restart()
            target.busy = False
            self.log(f"server started again on port {target.server.port} "
                     f"(pid {target.server.pid})")

        self.later(fault.pause, "server start", start_again)
        return True

    def sentinel_fault(self, target: SentinelTarget, fault: Fault) -> bool:
        cluster = target.cluster
        if fault.kind == "sentinel-stop":
            return self.sentinel_stop(cluster, fault)
        if target.busy or cluster.healthy() is None:
            self.log("  skipped: the cluster is not healthy yet")
            return False
        old = cluster.primary()
        target.busy = True
        if fault.kind == "primary-stop":
            os.kill(old.pid, signal.SIGSTOP)
            self.log(f"  SIGSTOP primary pid {old.pid} (port {old.port})")

            def resume() -> None:
                os.kill(old.pid, signal.SIGCONT)
                target.busy = False
                self.log(f"SIGCONT server pid {old.pid} (port {old.port}); sentinels name "
                         f"{cluster.primary_port()} the primary")

            self.later(fault.pause, "SIGCONT", resume)
            return True
        old.kill()
        killed_at = time.monotonic()
        self.log(f"  SIGKILL primary pid {old.pid} (port {old.port})")

        def rejoin() -> None:
            port = cluster.primary_port()
            if port is None or port == old.port:
                if time.monotonic() - killed_at > 60:
                    raise HarnessError(f"no failover within 60s of killing {old.port}:\n"
                                       + cluster.describe())
                self.later(0.5, "rejoin", rejoin)
                return
            self.log(f"sentinels promoted {port} ({time.monotonic() - killed_at:.1f}s after "
                     f"the kill); restarting {old.port} as its replica in {fault.pause:.1f}s")

            def restart() -> None:
                now = cluster.primary_port() or port
                cluster.restart_as_replica(old, now)
                target.busy = False
                self.log(f"server {old.port} started again as a replica of {now}")

            self.later(fault.pause, "restart as replica", restart)

        self.later(0.5, "rejoin", rejoin)
        return True

    def cluster_fault(self, target: ClusterTarget, fault: Fault) -> bool:
        """Start a cluster fault in the worker thread, unless the last one is still going on
        (or the cluster is not ok again yet): then it is skipped, as under Sentinel."""
        if target.busy:
            self.log("  skipped: the last cluster fault is still in progress")
            return False
        if (problem := target.cluster.problem()) is not None:
            self.log(f"  skipped: the cluster is not ok: {problem.text}")
            return False
        stream = self.streams[int(fault.pick * len(self.streams))]
        bodies: dict[str, Callable[[], None]] = {
            "primary-kill": lambda: target.primary_kill(stream, fault.pause, self.log),
            "primary-stop": lambda: target.primary_stop(stream, fault.pause, False, self.log),
            "primary-stop-long": lambda: target.primary_stop(stream, fault.pause, True, self.log),
            "slot-migrate": lambda: target.slot_migrate(stream, fault.pause, int(fault.same_name),
                                                        self.log),
        }
        return target.launch(fault.kind, bodies[fault.kind], self.log)

    # ------------------------------------------------------------------ injected loss

    def steal(self, n: int) -> int:
        """XREADGROUP entries never delivered to edged with a foreign consumer and XACK them
        without running the handler; counts only entries whose publish was acknowledged."""
        assert self.ledger_client is not None
        if isinstance(self.target, ClusterTarget):
            return self.steal_on_cluster(n)
        client = self.target.client()
        stolen = 0
        deadline = time.monotonic() + 30
        try:
            while stolen < n and time.monotonic() < deadline:
                reply: Any = client.xreadgroup(GROUP, THIEF, dict.fromkeys(self.streams, ">"),
                                          count=1, block=200)
                for raw_stream, entries in reply or []:
                    for raw_id, fields in entries:
                        if stolen >= n:
                            break  # left in the thief's pending list: edged reclaims it
                        stream, entry_id = raw_stream.decode(), raw_id.decode()
                        client.xack(stream, GROUP, entry_id)
                        if self.opts.sentinel:
                            client.execute_command("WAIT", 1, 2000)
                        stolen += self.count_stolen(stream, entry_id, fields, stolen, n)
        finally:
            client.close()
        return stolen

    def count_stolen(self, stream: str, entry_id: str, fields: dict[bytes, bytes], stolen: int,
                     n: int) -> int:
        """1 if the entry just XACKed behind edged's back counts as an injected loss."""
        assert self.ledger_client is not None
        seq = json.loads(fields[PAYLOAD_FIELD.encode()])["seq"]
        key = f"{stream} {entry_id} {seq}"
        if self.acknowledged(key):
            self.ledger_client.rpush(INJECTED_KEY, key)
            self.log(f"injected loss {stolen + 1}/{n}: XACKed {key} as {THIEF}")
            return 1
        self.log(f"stole {key}, but its publish was not acknowledged: not counted")
        return 0

    def steal_on_cluster(self, n: int) -> int:
        """``steal`` on a cluster: one physical stream at a time (one slot per command), on a
        connection to the stream's own primary, where the XACK is followed by WAIT 1 on the
        same connection (a pipeline); an XACK no replica confirmed is not counted."""
        rc = self.target.client()
        stolen = 0
        deadline = time.monotonic() + 30
        try:
            while stolen < n and time.monotonic() < deadline:
                for stream in self.streams:
                    if stolen >= n:
                        break
                    try:
                        stolen += self.steal_one(rc, stream, stolen, n)
                    except REDIS_ERRORS as exc:  # MOVED after a migration, a node away
                        self.log(f"stealing from {stream}: {type(exc).__name__}: {exc}")
                        with contextlib.suppress(Exception):
                            rc.nodes_manager.initialize()
        finally:
            rc.close()
        return stolen

    def steal_one(self, rc: Any, stream: str, stolen: int, n: int) -> int:
        owner = rc.get_node_from_key(stream)
        with redis.Redis(host=owner.host, port=owner.port, socket_timeout=5,
                         socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)) as node:
            reply: Any = node.xreadgroup(GROUP, THIEF, {stream: ">"}, count=1, block=100)
            for _, entries in reply or []:
                for raw_id, fields in entries:
                    entry_id = raw_id.decode()
                    pipe = node.pipeline(transaction=False)
                    pipe.xack(stream, GROUP, entry_id)
                    pipe.execute_command("WAIT", 1, 2000)
                    replies: Any = pipe.execute()
                    if int(replies[1]) < 1:
                        self.log(f"stole {stream} {entry_id}, but no replica confirmed the "
                                 f"XACK: not counted")
                        continue
                    return self.count_stolen(stream, entry_id, fields, stolen, n)
        return 0

    def acknowledged(self, key: str) -> bool:
        """Wait until the producer has recorded the publish of ``key`` either way."""
        assert self.ledger_client is not None
        ledger = self.ledger_client

        def verdict() -> str | None:
            if ledger.execute_command("LPOS", PUBLISHED_KEY, key) is not None:
                return "acked"
            if any(_text(u).startswith(key + " ") for u in ledger.lrange(UNACKED_KEY, 0, -1)):
                return "unacked"
            return None

        try:
            return wait_for(verdict, timeout=10, interval=0.05) == "acked"
        except AssertionError:
            return False

    # ------------------------------------------------------------------ the run

    def run(self) -> Report:
        mode = "cluster" if self.opts.cluster else "sentinel" if self.opts.sentinel else "standalone"
        self.log(f"seed {self.opts.seed}, duration {self.opts.duration:g}s, {mode}, server "
                 f"{server_binary()}, workdir {self.workdir}")
        self.setup()
        faults = plan(self.opts.seed, self.opts.duration, self.opts.sentinel, self.opts.cluster)
        self.log(f"{len(faults)} faults planned: " + ", ".join(
            f"{k} {v}" for k, v in sorted(Counter(f.kind for f in faults).items())))
        if isinstance(self.target, ClusterTarget):
            self.producer = ClusterProducer(self.target.cluster.seeds(), self.ledger.url,
                                            self.layout, self.opts.seed, self.opts.interval)
        else:
            self.producer = Producer(self.target.producer_client, self.ledger.url, self.streams,
                                     self.opts.seed, self.opts.sentinel, self.opts.interval)
        self.producer.start()
        self.t0 = time.monotonic()  # fault times count from the first publish
        self.log("producer started; fault clock starts now")
        self.play(faults)
        self.restore()
        self.producer.stop()
        why = (" (" + ", ".join(f"{k} {v}" for k, v in self.producer.errors.most_common()) + ")"
               if isinstance(self.producer, ClusterProducer) and self.producer.errors else "")
        self.log(f"producer stopped: {self.producer.acked} acknowledged, "
                 f"{self.producer.unacked} not acknowledged{why}")
        if self.producer.acked == 0:
            raise HarnessError("no publish was acknowledged: the history would prove nothing")
        self.settle()
        self.stop_daemons()
        return self.judge()

    def play(self, faults: list[Fault]) -> None:
        pending = list(faults)
        end = self.t0 + self.opts.duration
        while time.monotonic() < end:
            self.check_self_exits()
            self.run_due()
            if self.producer is not None and self.producer.crashed is not None:
                raise HarnessError(f"the producer crashed: {self.producer.crashed!r}")
            if isinstance(self.target, ClusterTarget) and self.target.failed is not None:
                raise HarnessError(f"a cluster fault failed: {self.target.failed}")
            while pending and self.elapsed() >= pending[0].at:
                self.apply(pending.pop(0))
            if (self.injected < self.opts.inject_loss and self.elapsed() >= self.inject_at
                    and self.target.quiet()):
                self.injected += self.steal(self.opts.inject_loss - self.injected)
            time.sleep(0.05)  # the fault clock's tick

    def restore(self) -> None:
        """Faults stop: every paused process resumes, every stopped one starts again."""
        self.log("fault window over: restoring everything")
        deadline = time.monotonic() + 120
        while self.actions:
            if time.monotonic() > deadline:
                raise HarnessError("could not restore every process within 120s")
            self.check_self_exits()
            self.run_due(everything=True)
            if self.actions:
                time.sleep(0.1)  # a rescheduled action (failover, SIGTERM drain) waits
        if isinstance(self.target, SentinelTarget):
            try:
                self.target.cluster.wait_healthy(60)
            except AssertionError as exc:
                self.problems.append(f"the sentinel cluster did not heal: {exc}")
        if isinstance(self.target, ClusterTarget):
            self.target.restore(self.log)  # a cluster that does not heal ends the run (exit 2)
        if self.injected < self.opts.inject_loss:
            self.injected += self.steal(self.opts.inject_loss - self.injected)
            if self.injected < self.opts.inject_loss:
                self.problems.append(f"injected only {self.injected} of "
                                     f"{self.opts.inject_loss} losses")
        self.log("restored")

    def group_state(self) -> tuple[int, int, list[str]] | None:
        """(pending, undelivered, pending sample) over every stream; None if unknown."""
        try:
            client = self.target.client()
        except REDIS_ERRORS:
            return None
        pending = undelivered = 0
        sample: list[str] = []
        try:
            for stream in self.streams:
                info: Any = client.xinfo_groups(stream)
                groups = {_text(g["name"]): g for g in info}
                group = groups.get(GROUP)
                if group is None:
                    undelivered += int(client.xlen(stream))
                    sample.append(f"{stream}: group {GROUP} missing")
                    continue
                pending += int(group["pending"])
                last = group["last-delivered-id"].decode()
                rest: Any = client.xrange(stream, min=f"({last}", max="+")
                undelivered += len(rest)
                if group["pending"]:
                    rows: Any = client.xpending_range(stream, GROUP, "-", "+", 10)
                    for row in rows:
                        sample.append(f"{stream} {row['message_id'].decode()} "
                                      f"{row['consumer'].decode()} x{row['times_delivered']}")
        except REDIS_ERRORS:
            return None
        finally:
            client.close()
        return pending, undelivered, sample

    def settle(self) -> None:
        self.log(f"settling: waiting up to {self.opts.settle_timeout:g}s for every entry to be "
                 f"delivered and every pending list to drain")

        def drained() -> bool:
            self.check_self_exits()
            state = self.group_state()
            return state is not None and state[0] == 0 and state[1] == 0 and self.all_ready()

        started = time.monotonic()
        try:
            wait_for(drained, timeout=self.opts.settle_timeout, interval=0.25)
            self.log(f"drained after {time.monotonic() - started:.1f}s")
        except AssertionError:
            state = self.group_state()
            self.problems.append(f"not drained after {self.opts.settle_timeout:g}s: {state}")
            self.log(f"NOT drained after {self.opts.settle_timeout:g}s: {state}")

    def all_ready(self) -> bool:
        """Every daemon's current instance has logged "ready:" (so it handles SIGTERM)."""
        return all(s.proc is not None and "ready:" in s.proc.output() for s in self.slots)

    def stop_daemons(self) -> None:
        self.check_self_exits()
        for slot in self.slots:
            if slot.proc is not None and slot.proc.proc.poll() is None:
                if slot.state == "stopped":
                    os.kill(slot.proc.pid, signal.SIGCONT)
                slot.state = "terminating"
                slot.proc.signal(signal.SIGTERM)
        for slot in self.slots:
            if slot.proc is None:
                continue
            try:
                rc = slot.proc.proc.wait(timeout=SHUTDOWN_GRACE + 15)
            except Exception:
                self.problems.append(f"{slot.name} did not stop after the final SIGTERM")
                self.log(f"{slot.name} did not stop after SIGTERM; log tail:\n"
                         + _indent(_tail(slot.proc)))
                slot.proc.kill()
                continue
            if rc != 0:
                self.problems.append(f"{slot.name} exited {rc} after the final SIGTERM")
            slot.state = "down"
        self.log("daemons stopped")

    def dead_letters(self, client: Any) -> list[DeadLetter]:
        out = []
        names = dict.fromkeys(dead for name, n in self.layout
                              for dead in dead_letter_names(name, n, None, self.opts.cluster))
        for dead_stream in names:
            stream = dead_stream.removesuffix(":dead").strip("{}")
            entries: Any = client.xrange(dead_stream)
            for _, raw in entries:
                fields = {k.decode(errors="replace"): v for k, v in raw.items()}
                try:
                    seq: int | None = int(json.loads(fields[PAYLOAD_FIELD])["seq"])
                except (KeyError, ValueError, TypeError):
                    seq = None
                out.append(DeadLetter(
                    stream=fields.get(DEAD_STREAM, stream.encode()).decode(),
                    id=fields.get(DEAD_ID, b"?").decode(), seq=seq,
                    reason=fields.get(DEAD_REASON, b"").decode(errors="replace"),
                    deliveries=fields.get(DEAD_DELIVERIES, b"?").decode()))
        return out

    def judge(self) -> Report:
        assert self.ledger_client is not None
        ledger = self.ledger_client

        def texts(key: str) -> list[str]:
            return [_text(x) for x in ledger.lrange(key, 0, -1)]

        state = self.group_state()
        if state is None:
            raise HarnessError("cannot read the groups at the end")
        client = self.target.client()
        try:
            dead = self.dead_letters(client)
        finally:
            client.close()
        return check(
            seed=self.opts.seed,
            published=texts(PUBLISHED_KEY),
            unacknowledged=texts(UNACKED_KEY),
            runs=texts(RUNS_KEY),
            injected=texts(INJECTED_KEY),
            dead=dead,
            pending_left=state[0],
            undelivered_left=state[1],
            pending_sample=state[2],
            self_exits=self.self_exits,
            problems=self.problems,
            faults_played=dict(self.played),
            faults_skipped=dict(self.skipped),
            logical={p: name for name, n in self.layout for p in shard_names(name, n)},
        )

    # ------------------------------------------------------------------ teardown

    def cleanup(self) -> None:
        """Stop everything we started, by pid; resume what is paused first."""
        if self.producer is not None:
            with contextlib.suppress(Exception):
                self.producer.stop()
        for d in self.daemons:
            with contextlib.suppress(Exception):
                d.kill()
        with contextlib.suppress(Exception):
            self.target.stop()
        if self.ledger_client is not None:
            self.ledger_client.close()
        with contextlib.suppress(Exception):
            self.ledger.stop()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _tail(proc: DaemonProcess, lines: int = 40) -> str:
    return "\n".join(proc.output().splitlines()[-lines:])


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in text.splitlines())


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description="Seeded random faults against real servers and edged daemons, then a "
                    "check of the history. Exit 0 only if it is clean.")
    p.add_argument("--seed", type=int, default=None, help="fault plan seed (default: random)")
    p.add_argument("--duration", type=float, default=120, help="seconds of faults (default 120)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sentinel", action="store_true",
                      help="primary + replica + 3 sentinels instead of one AOF server")
    mode.add_argument("--cluster", action="store_true",
                      help="a Redis Cluster of 3 primaries and 3 replicas instead of one AOF "
                           "server; stream chaos:s0 is sharded (--shards)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where logs and data go (kept); default a temporary directory, "
                        "removed after a clean run")
    p.add_argument("--inject-loss", type=int, default=0, metavar="N",
                   help="XACK N entries behind edged's back, to prove the checker sees a loss")
    p.add_argument("--streams", type=int, default=3, choices=(1, 2, 3, 4),
                   help="logical streams (default 3; --cluster needs 2 or more: one sharded)")
    p.add_argument("--shards", type=int, default=CLUSTER_SHARDS,
                   help=f"--cluster: shards of the logical stream chaos:s0 (default "
                        f"{CLUSTER_SHARDS})")
    p.add_argument("--interval", type=float, default=0.025,
                   help="seconds between publishes (default 0.025)")
    p.add_argument("--settle-timeout", type=float, default=90.0,
                   help="how long the end waits for the pending lists to drain")
    p.add_argument("--summary-json", type=Path, default=None,
                   help="also write the figures as JSON to this file")
    a = p.parse_args(argv)
    if a.cluster and a.streams < 2:
        p.error("--cluster needs --streams 2 or more: a sharded stream and an unsharded one")
    if a.cluster and not 2 <= a.shards <= 1024:
        p.error("--shards must be between 2 and 1024")
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    return Options(seed=seed, duration=a.duration, sentinel=a.sentinel, cluster=a.cluster,
                   workdir=a.workdir, inject_loss=a.inject_loss, streams=a.streams,
                   shards=a.shards, interval=a.interval, settle_timeout=a.settle_timeout,
                   summary_json=a.summary_json)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    print(f"chaos: seed {opts.seed} (replay: python -m tests.chaos --seed {opts.seed} "
          f"--duration {opts.duration:g}{' --sentinel' if opts.sentinel else ''}"
          f"{' --cluster' if opts.cluster else ''}"
          f"{f' --shards {opts.shards}' if opts.cluster and opts.shards != CLUSTER_SHARDS else ''}"
          f"{f' --inject-loss {opts.inject_loss}' if opts.inject_loss else ''})", flush=True)
    # Ctrl-C and SIGTERM both end the run through the finally below (also when started in
    # the background, where SIGINT would otherwise be ignored).
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, _terminated)
    history = History(opts)
    report: Report | None = None
    try:
        report = history.run()
    except HarnessError as exc:
        print(f"chaos: the harness failed (seed {opts.seed}): {exc}", flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"chaos: interrupted (seed {opts.seed})", flush=True)
        return 130
    finally:
        history.cleanup()
        if report is not None:
            print(report.summary(), flush=True)
            (history.workdir / "summary.json").write_text(report.to_json())
            if opts.summary_json is not None:
                opts.summary_json.write_text(report.to_json())
        if report is not None and report.clean and not history.keep_workdir:
            shutil.rmtree(history.workdir, ignore_errors=True)
        else:
            print(f"chaos: logs and data kept in {history.workdir}", flush=True)
    assert report is not None
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
