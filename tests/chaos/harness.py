"""One seeded fault run against real processes, then the check (tests/chaos/checker.py).

Setup: a data server with AOF (`--appendonly yes --appendfsync always`) on a free loopback
port, or with ``--sentinel`` a primary, a replica and three sentinels
(tests/sentinel_cluster.py); a separate ledger server, never faulted, on which the producer
records acknowledged publishes and the handler (tests/chaos/handler.py) records every run;
three streams; three `python -m edged start` daemons sharing one group on all of them.

While the run lasts a producer thread publishes entries carrying a unique sequence number,
and the fault plan, drawn up front from ``random.Random(seed)``, is played: SIGKILL, SIGSTOP
(SIGCONT after a pause) and SIGTERM of daemons, which are restarted under the same or a new
consumer name; SIGKILL or SIGTERM of the data server, started again on its port and data
directory; with ``--sentinel``, SIGKILL of the primary (restarted as a replica once the
sentinels have promoted the other) and SIGSTOP/SIGCONT of the primary. Each fault is printed
with its time, so a run can be replayed with ``--seed``.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from edged.keys import DEAD_DELIVERIES, DEAD_ID, DEAD_REASON, DEAD_STREAM, PAYLOAD_FIELD
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
}


class HarnessError(Exception):
    """The history could not be run as planned (not a verdict about edged)."""


# --------------------------------------------------------------------------- the plan


@dataclass
class Fault:
    at: float  # seconds after the start of the run
    kind: str
    slot: int  # which daemon (daemon faults)
    pause: float
    same_name: bool  # restart a daemon under the same consumer name

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
        }[self.kind]


def plan(seed: int, duration: float, sentinel: bool) -> list[Fault]:
    """The fault schedule: a pure function of the seed, the duration and the mode.

    Every fault draws the same number of values, so a seed gives the same plan each time.
    """
    rng = random.Random(seed)
    kinds = {**DAEMON_FAULTS, **(SENTINEL_FAULTS if sentinel else SERVER_FAULTS)}
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
        if t >= duration:
            return faults
        lo, hi = kinds[kind][1:]
        faults.append(Fault(round(t, 2), kind, slot, round(lo + u * (hi - lo), 2), same))


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


Target = Standalone | SentinelTarget


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
    workdir: Path | None = None
    inject_loss: int = 0
    streams: int = 3
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
        self.streams = [f"chaos:s{i}" for i in range(opts.streams)]
        self.target: Target = (SentinelTarget(self.workdir) if opts.sentinel
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

    def stream_config(self, stream: str) -> dict[str, Any]:
        return {
            "stream": stream, "group": GROUP, "handler": HANDLER, "start-id": "0",
            "concurrency": 8, "claim-idle": CLAIM_IDLE, "claim-interval": CLAIM_INTERVAL,
            "max-deliveries": MAX_DELIVERIES, "retry-backoff": "100ms",
        }

    def spawn(self, slot: Slot, name: str) -> None:
        slot.instance += 1
        slot.name = name
        path = self.workdir / "conf" / f"{name}.toml"
        daemon = {"consumer": name, "shutdown-grace": f"{SHUTDOWN_GRACE:g}s",
                  "heartbeat-interval": "1s", "consumer-expiry": "10s", "listen": ""}
        self.target.write_config(path, [self.stream_config(s) for s in self.streams], daemon)
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
            self.daemon_fault(fault)
        elif isinstance(self.target, Standalone):
            self.server_fault(self.target, fault)
        else:
            self.sentinel_fault(self.target, fault)

    def daemon_fault(self, fault: Fault) -> None:
        # The planned slot, else the next running one (a paused or restarting daemon is not
        # faulted again until it is back).
        order = [self.slots[(fault.slot + i) % DAEMONS] for i in range(DAEMONS)]
        slot = next((s for s in order if s.state == "running" and s.proc is not None), None)
        if slot is None or slot.proc is None:
            self.log("  skipped: no daemon is running")
            return
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
            return
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

    def server_fault(self, target: Standalone, fault: Fault) -> None:
        if target.busy:
            self.log("  skipped: the server is already down")
            return
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

    def sentinel_fault(self, target: SentinelTarget, fault: Fault) -> None:
        cluster = target.cluster
        if target.busy or cluster.healthy() is None:
            self.log("  skipped: the cluster is not healthy yet")
            return
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
            return
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

    # ------------------------------------------------------------------ injected loss

    def steal(self, n: int) -> int:
        """XREADGROUP entries never delivered to edged with a foreign consumer and XACK them
        without running the handler; counts only entries whose publish was acknowledged."""
        assert self.ledger_client is not None
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
                        seq = json.loads(fields[PAYLOAD_FIELD.encode()])["seq"]
                        key = f"{stream} {entry_id} {seq}"
                        if self.acknowledged(key):
                            self.ledger_client.rpush(INJECTED_KEY, key)
                            stolen += 1
                            self.log(f"injected loss {stolen}/{n}: XACKed {key} as {THIEF}")
                        else:
                            self.log(f"stole {key}, but its publish was not acknowledged: "
                                     f"not counted")
        finally:
            client.close()
        return stolen

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
        self.log(f"seed {self.opts.seed}, duration {self.opts.duration:g}s, "
                 f"{'sentinel' if self.opts.sentinel else 'standalone'}, server "
                 f"{server_binary()}, workdir {self.workdir}")
        self.setup()
        faults = plan(self.opts.seed, self.opts.duration, self.opts.sentinel)
        self.log(f"{len(faults)} faults planned")
        self.producer = Producer(self.target.producer_client, self.ledger.url, self.streams,
                                 self.opts.seed, self.opts.sentinel, self.opts.interval)
        self.producer.start()
        self.t0 = time.monotonic()  # fault times count from the first publish
        self.log("producer started; fault clock starts now")
        self.play(faults)
        self.restore()
        self.producer.stop()
        self.log(f"producer stopped: {self.producer.acked} acknowledged, "
                 f"{self.producer.unacked} not acknowledged")
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
        except redis.RedisError:
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
        except redis.RedisError:
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

    def dead_letters(self, client: redis.Redis) -> list[DeadLetter]:
        out = []
        for stream in self.streams:
            entries: Any = client.xrange(f"{stream}:dead")
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
    p.add_argument("--sentinel", action="store_true",
                   help="primary + replica + 3 sentinels instead of one AOF server")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where logs and data go (kept); default a temporary directory, "
                        "removed after a clean run")
    p.add_argument("--inject-loss", type=int, default=0, metavar="N",
                   help="XACK N entries behind edged's back, to prove the checker sees a loss")
    p.add_argument("--streams", type=int, default=3, choices=(1, 2, 3, 4))
    p.add_argument("--interval", type=float, default=0.025,
                   help="seconds between publishes (default 0.025)")
    p.add_argument("--settle-timeout", type=float, default=90.0,
                   help="how long the end waits for the pending lists to drain")
    p.add_argument("--summary-json", type=Path, default=None,
                   help="also write the figures as JSON to this file")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    return Options(seed=seed, duration=a.duration, sentinel=a.sentinel, workdir=a.workdir,
                   inject_loss=a.inject_loss, streams=a.streams, interval=a.interval,
                   settle_timeout=a.settle_timeout, summary_json=a.summary_json)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    print(f"chaos: seed {opts.seed} (replay: python -m tests.chaos --seed {opts.seed} "
          f"--duration {opts.duration:g}{' --sentinel' if opts.sentinel else ''}"
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
