"""A primary, one replica and three sentinels on loopback, for the failover tests.

Every process is one we started and is stopped by its pid. The binary is the one the other
tests use (`tests.servers.server_binary`); a sentinel is the same binary run as
`<binary> sentinel.conf --sentinel` (valkey-server and redis-server both take that).

Timings are the short ones of a lab: `down-after-milliseconds 1000`, `failover-timeout 3000`,
so a kill -9 of the primary is followed by a promotion within a few seconds. The servers use
`repl-diskless-sync-delay 0` so that a replica (re)joining syncs at once instead of after the
default 5 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.servers import Server, free_port, server_binary, stop_process
from tests.support import wait_for, write_config

SERVICE = "edged-test"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
SERVER_ARGS = ["--repl-diskless-sync-delay", "0"]


def _client(port: int) -> redis.Redis:
    """A client that fails fast: one attempt, short timeouts (redis-py retries by default,
    which turns a paused server into a 15 s stall)."""
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 0), decode_responses=True)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def role(port: int) -> tuple[str, int | None] | None:
    """("master", None) or ("slave", <primary port>) as the server itself says; None if down."""
    try:
        with _client(port) as r:
            reply = r.execute_command("ROLE")
    except (redis.ConnectionError, redis.TimeoutError):
        return None
    kind = _text(reply[0])
    return (kind, int(reply[2])) if kind == "slave" else (kind, None)


def replica_link_up(port: int, primary_port: int) -> bool:
    """The server on ``port`` is a replica of ``primary_port`` and its link is up (synced)."""
    try:
        with _client(port) as r:
            info = r.info("replication")
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    return (info.get("role") == "slave" and int(info.get("master_port", 0)) == primary_port
            and info.get("master_link_status") == "up")


@dataclass
class SentinelProcess:
    """One sentinel with its own config file (sentinels rewrite it)."""

    port: int
    data_dir: Path
    service: str
    monitor_port: int
    proc: subprocess.Popen[bytes] | None = None
    conf_extra: list[str] = field(default_factory=list)  # more sentinel.conf lines (TLS, ACL)
    bind: str = "127.0.0.1"  # e.g. "0.0.0.0" for clients on other hosts (the fleet tests)
    monitor_host: str = "127.0.0.1"  # the primary's address as the sentinels announce it

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> SentinelProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {self.port}",
            f"bind {self.bind}",
            f"dir {self.data_dir}",
            f"logfile {self.data_dir / 'sentinel.log'}",
            f"sentinel monitor {self.service} {self.monitor_host} {self.monitor_port} 2",
            f"sentinel down-after-milliseconds {self.service} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {self.service} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {self.service} 1",
            *self.conf_extra,
        ]) + "\n")
        self.proc = subprocess.Popen(
            [server_binary(), str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for(self._up, timeout, what=f"sentinel on port {self.port}")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.data_dir / "sentinel.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sentinel exited with {self.proc.returncode}: {log}")
        try:
            with self.client() as r:
                return bool(r.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def client(self) -> redis.Redis:
        return _client(self.port)

    def current_primary(self) -> int | None:
        """SENTINEL get-master-addr-by-name, as this sentinel sees it."""
        try:
            with self.client() as r:
                addr = r.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
        except (redis.ConnectionError, redis.TimeoutError):
            return None
        return int(addr[1]) if addr else None

    def view(self) -> dict[str, Any] | None:
        """What this sentinel knows: its primary's flags, replicas and peer sentinels."""
        try:
            with self.client() as r:
                primary = r.execute_command("SENTINEL", "MASTER", self.service)
                replicas = r.execute_command("SENTINEL", "REPLICAS", self.service)
                peers = r.execute_command("SENTINEL", "SENTINELS", self.service)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return None
        return {"primary": _pairs(primary), "replicas": [_pairs(x) for x in replicas],
                "peers": [_pairs(x) for x in peers]}

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def _pairs(flat: Any) -> dict[str, str]:
    """SENTINEL replies are flat [k, v, ...] lists under RESP2 (dicts under some clients)."""
    if isinstance(flat, dict):
        return {_text(k): _text(v) for k, v in flat.items()}
    it = iter(flat)
    return {_text(k): _text(v) for k, v in zip(it, it, strict=False)}


class SentinelCluster:
    """A primary, one replica, three sentinels monitoring ``service``."""

    def __init__(self, base: Path, service: str = SERVICE,
                 sentinel_conf: list[str] | None = None) -> None:
        self.base = base
        self.service = service
        self.sentinel_conf = list(sentinel_conf or [])  # extra lines for every sentinel.conf
        self.servers: dict[int, Server] = {}  # by port; the killed ones stay until restarted
        self.retired: list[Server] = []  # killed instances replaced by a restart on their port
        self.sentinels: list[SentinelProcess] = []
        self.paused: set[int] = set()  # sentinels SIGSTOPped by a test: the views skip them

    # ------------------------------------------------------------------ lifecycle

    def pause_sentinel(self, index: int) -> int:
        """SIGSTOP sentinel ``index`` (by pid); its pid."""
        proc = self.sentinels[index].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)
        self.paused.add(index)
        return proc.pid

    def resume_sentinel(self, index: int) -> None:
        proc = self.sentinels[index].proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        self.paused.discard(index)

    def _live(self) -> list[SentinelProcess]:
        return [s for i, s in enumerate(self.sentinels) if i not in self.paused]

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        """Start everything and wait until it can fail over; on an error, stop what started."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        primary = Server(port=free_port(), data_dir=self.base / "server-a",
                         extra=list(SERVER_ARGS)).start()
        self.servers[primary.port] = primary
        replica = Server(port=free_port(), data_dir=self.base / "server-b",
                         extra=[*SERVER_ARGS, "--replicaof", "127.0.0.1", str(primary.port)]).start()
        self.servers[replica.port] = replica
        # The replica must be attached before the sentinels' first INFO of the primary, or
        # they learn of it only at the next INFO (every 10 s).
        wait_for(lambda: replica_link_up(replica.port, primary.port), timeout, interval=0.05,
                 what="the replica synced with the primary")
        for i in range(3):
            sentinel = SentinelProcess(
                port=free_port(), data_dir=self.base / f"sentinel-{i}", service=self.service,
                monitor_port=primary.port, conf_extra=list(self.sentinel_conf),
            )
            self.sentinels.append(sentinel)  # before start: stop() must find it if start fails
            sentinel.start()
        self.wait_healthy(timeout)

    def stop(self) -> None:
        """Stop everything we started, by pid; a paused server or sentinel is resumed first."""
        for index in list(self.paused):
            self.resume_sentinel(index)
        for s in self.sentinels:
            s.stop()
        for srv in [*self.servers.values(), *self.retired]:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.proc.send_signal(signal.SIGCONT)
            srv.stop()

    # ------------------------------------------------------------------ views

    @property
    def sentinel_hosts(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def primary_port(self) -> int | None:
        """The primary on which every sentinel agrees (the paused ones aside), else None."""
        ports = {s.current_primary() for s in self._live()}
        return ports.pop() if len(ports) == 1 else None

    def primary(self) -> Server:
        port = self.primary_port()
        assert port is not None, "the sentinels do not agree on a primary"
        return self.servers[port]

    def primary_flags(self) -> list[set[str]]:
        """The flags each reachable sentinel gives the primary (``master``, ``s_down``, ...)."""
        views = [s.view() for s in self._live()]
        return [set(v["primary"]["flags"].split(",")) for v in views if v is not None]

    def running_replicas(self, primary_port: int) -> list[Server]:
        return [s for p, s in self.servers.items()
                if p != primary_port and s.proc is not None and s.proc.poll() is None]

    def healthy(self) -> int | None:
        """The primary's port when the cluster can fail over again, else None.

        Every sentinel names the same primary and sees it up; it is a primary by its own ROLE;
        exactly one running replica is synced to it; every sentinel knows the two others and
        sees that replica as a plain, reachable replica.
        """
        port = self.primary_port()
        if port is None or role(port) != ("master", None):
            return None
        replicas = self.running_replicas(port)
        if len(replicas) != 1 or not replica_link_up(replicas[0].port, port):
            return None
        for s in self._live():
            view = s.view()
            if view is None or len(view["peers"]) != 2 or view["primary"]["flags"] != "master":
                return None
            seen = {int(r["port"]): r for r in view["replicas"]}
            mine = seen.get(replicas[0].port)
            if mine is None or mine["flags"] != "slave":
                return None
        return port

    def wait_healthy(self, timeout: float = 30.0) -> int:
        return int(wait_for(self.healthy, timeout, interval=0.05,
                            what=lambda: f"a healthy sentinel cluster:\n{self.describe()}"))

    def describe(self) -> str:
        lines = []
        for s in self.sentinels:
            view = s.view()
            if view is None:
                lines.append(f"sentinel {s.port}: unreachable")
                continue
            reps = ", ".join(f"{r['port']}({r['flags']})" for r in view["replicas"])
            lines.append(f"sentinel {s.port}: primary {view['primary'].get('port')} "
                         f"({view['primary'].get('flags')}), replicas {reps}, "
                         f"{len(view['peers'])} peers")
        for port, srv in self.servers.items():
            alive = srv.proc is not None and srv.proc.poll() is None
            lines.append(f"server {port}: {'running' if alive else 'dead'}, role {role(port)}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ faults

    def kill_primary(self) -> Server:
        """SIGKILL the current primary (by pid); returns it."""
        srv = self.primary()
        srv.kill()
        return srv

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until every sentinel names a primary other than ``old_port``; its port."""
        def switched() -> int | None:
            port = self.primary_port()
            return port if port is not None and port != old_port else None

        return int(wait_for(switched, timeout, interval=0.05,
                            what=lambda: f"failover away from {old_port}:\n{self.describe()}"))

    def restart_as_replica(self, old: Server, primary_port: int | None) -> Server:
        """Start a killed server again on its port, as a replica of ``primary_port``.

        Started as a replica rather than as an empty primary: without persistence it has no
        data, and the sentinels would reconfigure it anyway. ``None``: start it as a primary
        (when there is no other).
        """
        assert old.proc is None or old.proc.poll() is not None, "still running"
        self.retired.append(old)
        extra = list(SERVER_ARGS)
        if primary_port is not None:
            extra += ["--replicaof", "127.0.0.1", str(primary_port)]
        srv = Server(port=old.port, data_dir=old.data_dir, extra=extra).start()
        self.servers[old.port] = srv
        return srv


def write_sentinel_config(path: Path, cluster: SentinelCluster, streams: list[dict[str, Any]],
                          daemon: dict[str, Any] | None = None) -> Path:
    """A daemon config with a ``[redis.sentinel]`` table (write_config has no nested tables)."""
    write_config(path, streams, daemon=daemon)
    hosts = ", ".join(f'"{h}"' for h in cluster.sentinel_hosts)
    head = f'[redis.sentinel]\nhosts = [{hosts}]\nservice = "{cluster.service}"\n'
    path.write_text(head + path.read_text())
    return path

