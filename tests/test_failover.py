"""Failover scenarios with real processes: Sentinel promotions (kill -9 of the primary, three
times), split brain (SIGSTOP/SIGCONT of the primary), no primary at all when the daemon starts,
a restarted standalone server, a consumer group deleted under a running daemon.

The Sentinel tests use tests/sentinel_cluster.py: a primary, one replica, three sentinels
(down-after 1000 ms), all on loopback.

Each test runs `edged start` daemons as subprocesses. Their handler
(`tests.handlers:record_timed`) records every run on the session `server`, a standalone
recorder that no test fails over, so the records survive what happens to the server under test.
Everything is checked against deadlines; every process is ours and stopped by its pid.

Measured numbers (kill → first entry handled on the new primary, WAIT-acknowledged entries
lost, split-brain writes) are printed: run with `-s` to see them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.sentinel_cluster import SentinelCluster, role, write_sentinel_config
from tests.servers import Server, free_port
from tests.support import DaemonProcess, wait_for, write_config
from tests.support import test_env as edged_env

pytestmark = pytest.mark.slow

GROUP = "edged"
HANDLER = "tests.handlers:record_timed"
DEADLINE = 30.0  # a Sentinel failover takes 2-5 s on loopback; a split vote adds ~6 s
# A daemon whose reader is down reads again within this after it logs +switch-master: the
# announcement should end any reconnect backoff (a reconnect on loopback takes milliseconds).
RESUME_AFTER_SWITCH = 1.5


# --------------------------------------------------------------------------- helpers


def stream_cfg(stream: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "stream": stream, "group": GROUP, "handler": HANDLER, "start-id": "0",
        "concurrency": 4, "claim-idle": "1500ms", "claim-interval": "200ms",
        "retry-backoff": "100ms",
    }
    cfg.update(extra)
    return cfg


def id_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


@dataclass
class Handled:
    """One run recorded by record_timed: "<id> <consumer> <delivery> <time>"."""

    id: str
    consumer: str
    delivery: int
    at: float


def handled(recorder: redis.Redis, stream: str) -> list[Handled]:
    rows = []
    for raw in recorder.lrange(f"{stream}:handled", 0, -1):
        entry_id, consumer, delivery, at = raw.decode().split()
        rows.append(Handled(entry_id, consumer, int(delivery), float(at)))
    return rows


def handled_ids(recorder: redis.Redis, stream: str) -> set[str]:
    return {h.id for h in handled(recorder, stream)}


def pending_count(r: redis.Redis, stream: str) -> int | None:
    try:
        return int(r.xpending(stream, GROUP)["pending"])
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return None


class Fleet:
    """The daemons one test started, kept in the ``spawned`` list: at teardown any still
    running is killed by its pid."""

    def __init__(self, recorder: Server, tmp_path: Path, procs: list[DaemonProcess]) -> None:
        self.recorder = recorder
        self.tmp_path = tmp_path
        self.procs = procs

    def start(self, consumer: str, streams: list[dict[str, Any]], *,
              cluster: SentinelCluster | None = None, url: str | None = None) -> DaemonProcess:
        path = self.tmp_path / f"{consumer}.toml"
        daemon = {"consumer": consumer, "shutdown-grace": "5s"}
        if cluster is not None:
            write_sentinel_config(path, cluster, streams, daemon=daemon)
        else:
            write_config(path, streams, daemon=daemon)
        env = edged_env(EDGED_TEST_REDIS=self.recorder.url, EDGED_TEST_CONSUMER=consumer)
        d = DaemonProcess(path, url, self.tmp_path / f"{consumer}.log", env=env)
        self.procs.append(d)
        return d

    def assert_running(self) -> None:
        for d in self.procs:
            assert d.proc.poll() is None, (
                f"daemon {d.log_path.name} exited with {d.proc.returncode}:\n{d.output()}")

    def logs(self) -> str:
        return "\n".join(f"--- {d.log_path.name}:\n{d.output()[-6000:]}" for d in self.procs)

    def explain(self, what: str, extra: Callable[[], str] | None = None) -> Callable[[], str]:
        """A wait_for message: ``what``, then ``extra()`` and the daemons' logs as they are at
        the deadline."""
        return lambda: "\n".join([what, *([extra()] if extra is not None else []), self.logs()])


@pytest.fixture
def fleet(server: Server, tmp_path: Path, spawned: list[DaemonProcess]) -> Fleet:
    return Fleet(server, tmp_path, spawned)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    c = SentinelCluster(tmp_path / "cluster")
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def stream() -> str:
    return f"fo:{uuid.uuid4().hex[:10]}"


class Producer:
    """Publishes one entry at a time through Sentinel with edged.publish.publish, in a thread.

    ``acked`` are the ids whose publish returned (WAIT saw ``wait_replicas`` replicas);
    ``unreplicated`` the ids of NotReplicated; ``errors`` the publishes that raised anything
    else (connection refused or reset during the failover: nothing is known of them).
    """

    def __init__(self, cluster: SentinelCluster, stream: str, wait_replicas: int = 1,
                 wait_timeout: float = 0.5, interval: float = 0.02) -> None:
        self.cluster = cluster
        self.stream = stream
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self.interval = interval
        self.acked: list[str] = []
        self.unreplicated: list[str] = []
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
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "the producer did not stop"
        assert self.crashed is None, f"the producer crashed: {self.crashed!r}"

    def acked_since(self, ms: int) -> int:
        with self._lock:
            return sum(1 for i in self.acked if id_ms(i) >= ms)

    async def _main(self) -> None:
        from edged.config import RedisConfig, SentinelConfig
        from edged.connect.client import make_client
        from edged.publish import NotReplicated, publish

        cfg = RedisConfig(sentinel=SentinelConfig(hosts=self.cluster.sentinel_hosts,
                                                  service=self.cluster.service))
        client = make_client(cfg, socket_timeout=2.0)
        seq = 0
        try:
            while not self._stop.is_set():
                body = json.dumps({"seq": seq}).encode()
                seq += 1
                try:
                    ids = await publish(client, self.stream, [body],
                                        wait_replicas=self.wait_replicas,
                                        wait_timeout=self.wait_timeout)
                except NotReplicated as exc:
                    with self._lock:
                        self.unreplicated.extend(exc.ids)
                except Exception as exc:  # anything else: unknown outcome
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    await anyio.sleep(0.05)
                    continue
                else:
                    with self._lock:
                        self.acked.extend(ids)
                await anyio.sleep(self.interval)
        except BaseException as exc:
            self.crashed = exc
            raise
        finally:
            await client.aclose()


ANNOUNCED = "failover: the primary is now"  # edged.daemon, on +switch-master
READ_FAILED = "read failed"  # edged.consumer, a read raised a transient error
READING_AGAIN = "reading again"  # edged.consumer, the first good read after that


def resume_lags(output: str) -> list[tuple[str, float | None]]:
    """For each +switch-master announcement a daemon logged while its reader was down: how
    long until it read again (None: not before the next announcement or the end of the log).

    An announcement followed by another one within RESUME_AFTER_SWITCH is not counted (the
    daemon had no chance yet); one that came while the reader was up needs no reconnect.
    """
    events: list[tuple[float, str, str]] = []
    for line in output.splitlines():
        kind = next((k for k in (ANNOUNCED, READ_FAILED, READING_AGAIN) if k in line), None)
        if kind is None:
            continue
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        events.append((at, kind, line[11:23]))
    lags: list[tuple[str, float | None]] = []
    down = False
    for i, (at, kind, stamp) in enumerate(events):
        if kind == READ_FAILED:
            down = True
        elif kind == READING_AGAIN:
            down = False
        elif down:
            following = next(((t, k) for t, k, _ in events[i + 1:] if k != READ_FAILED), None)
            if following is None:
                lags.append((stamp, None))
            elif following[1] == READING_AGAIN:
                lags.append((stamp, following[0] - at))
            elif following[0] - at > RESUME_AFTER_SWITCH:
                lags.append((stamp, None))
    return lags


def log_excerpt(output: str, stamp: str, lag: float | None) -> str:
    """The daemon's log lines from 3 s before the announcement at ``stamp`` to its next read."""
    day = output[:10]
    at = datetime.strptime(f"{day} {stamp}", "%Y-%m-%d %H:%M:%S,%f").timestamp()
    end = at + (lag if lag is not None else RESUME_AFTER_SWITCH) + 0.1
    lines = []
    for line in output.splitlines():
        try:
            t = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if at - 3 <= t <= end:
            lines.append("    " + line[11:200])
    return "\n".join(lines)


def lost_acked(recorder: redis.Redis, stream: str, acked: list[str]) -> list[str]:
    done = handled_ids(recorder, stream)
    return [i for i in acked if i not in done]


def settle_lost(recorder: redis.Redis, stream: str, acked: list[str]) -> list[str]:
    """The acknowledged ids still not handled once the deadline has given them every chance."""
    with contextlib.suppress(AssertionError):  # what is still missing is the answer
        wait_for(lambda: not lost_acked(recorder, stream, acked), DEADLINE, interval=0.1)
    return lost_acked(recorder, stream, acked)


def assert_drained(cluster_or_server: redis.Redis, recorder: redis.Redis, stream: str,
                   fleet: Fleet) -> int:
    """The group's PEL empties and every entry left in the stream was handled; its length."""
    wait_for(lambda: pending_count(cluster_or_server, stream) == 0, DEADLINE,
             what=fleet.explain(f"the PEL of {stream} to drain"))
    ids = [e[0].decode() for e in cluster_or_server.xrange(stream)]
    wait_for(lambda: not set(ids) - handled_ids(recorder, stream), DEADLINE,
             what=fleet.explain(f"every entry of {stream} handled"))
    return len(ids)


# --------------------------------------------------------------------------- Sentinel


def test_primary_killed_three_times_loses_no_wait_acknowledged_entry(
    cluster: SentinelCluster, fleet: Fleet, r: redis.Redis, stream: str,
) -> None:
    """SIGKILL the primary three times while a producer publishes with WAIT 1 and two
    [redis.sentinel] daemons consume; after each kill the killed server is restarted as a
    replica, so there is again one replica to fail over to.

    Must hold: after each kill, each daemon handles an entry published on the new primary
    within the deadline; each daemon reads again within RESUME_AFTER_SWITCH seconds of
    logging a +switch-master announcement (edged follows +switch-master: it must not sit out
    a reconnect backoff while the new primary is up; read from the daemons' logs, so that a
    slow producer cannot blur it); every entry whose publish was acknowledged by WAIT is
    handled at least once (0 lost); the PEL drains and every entry in the final primary's
    stream is handled; no daemon exits; each daemon saw every failover announced
    (+switch-master). Printed per kill: kill → sentinels agree → first entry handled, and
    each daemon's lag behind the switch."""
    streams = [stream_cfg(stream)]
    names = ("fo1", "fo2")
    daemons = [fleet.start(name, streams, cluster=cluster) for name in names]
    for d in daemons:
        d.wait_ready()
    results = []
    with Producer(cluster, stream) as producer:
        for kill in range(3):
            since = int(time.time() * 1000)
            wait_for(lambda since=since: producer.acked_since(since) >= 50, DEADLINE,
                     what=f"50 WAIT-acknowledged entries before kill {kill + 1}")
            old_port = cluster.wait_healthy()
            old = cluster.kill_primary()
            t_kill = time.time()  # after SIGKILL was reaped: later ids come from the new primary
            new_port = cluster.wait_failover(old_port, DEADLINE)
            t_promoted = time.time()
            kill_ms = int(t_kill * 1000)

            def first_by_each(kill_ms: int = kill_ms) -> dict[str, float] | None:
                firsts: dict[str, float] = {}
                for h in handled(r, stream):
                    if id_ms(h.id) > kill_ms:
                        firsts[h.consumer] = min(h.at, firsts.get(h.consumer, h.at))
                return firsts if set(firsts) == set(names) else None

            firsts = wait_for(first_by_each, DEADLINE,
                              what=fleet.explain(f"each daemon handling an entry after kill {kill + 1}"))
            results.append((kill + 1, old_port, new_port, t_kill, t_promoted, firsts))
            fleet.assert_running()
            # Only now, so that a sentinel cannot fail the fresh primary over to it at once
            # (with down-after 1000 ms a sentinel can mark a just-promoted primary down).
            cluster.restart_as_replica(old, cluster.primary_port() or new_port)
            cluster.wait_healthy()
        since = int(time.time() * 1000)
        wait_for(lambda: producer.acked_since(since) >= 20, DEADLINE,
                 what="20 WAIT-acknowledged entries after the last failover")
    acked = list(producer.acked)
    # Every acknowledged entry is handled within the deadline; only then count what is missing.
    lost = settle_lost(r, stream, acked)
    primary = cluster.primary().client()
    try:
        remaining = assert_drained(primary, r, stream, fleet)
    finally:
        primary.close()
    fleet.assert_running()
    runs = handled(r, stream)
    print(f"\n[failover] {len(acked)} WAIT-acknowledged, {len(producer.unreplicated)} not "
          f"replicated in time, {len(producer.errors)} publishes failed; {len(runs)} runs "
          f"recorded, {len(runs) - len({h.id for h in runs})} of them repeats; "
          f"{remaining} entries in the final stream")
    for n, old_port, new_port, t_kill, t_promoted, firsts in results:
        lags = {name: at - t_promoted for name, at in sorted(firsts.items())}
        print(f"[failover] kill {n}: {old_port} -> {new_port}: sentinels agreed after "
              f"{t_promoted - t_kill:.2f}s; first entry handled on the new primary "
              f"{min(firsts.values()) - t_kill:.2f}s after the kill; each daemon's first after "
              f"the switch: " + ", ".join(f"{k} {v:+.2f}s" for k, v in lags.items()))
    print(f"[failover] WAIT-acknowledged entries lost: {len(lost)}")
    slow = []
    for d in daemons:
        lags = resume_lags(d.output())
        for at, lag in lags:
            if lag is None or lag > RESUME_AFTER_SWITCH:
                late = f"{lag:.2f}s later" if lag is not None else "only after the next failover"
                slow.append(f"{d.log_path.name}: announced {at}, read again {late}:\n"
                            + log_excerpt(d.output(), at, lag))
        print(f"[failover] {d.log_path.name}: {len(lags)} +switch-master announcements while "
              f"disconnected; read again after: "
              + ", ".join("-" if lag is None else f"{lag:.2f}s" for _, lag in lags))
    assert not lost, f"{len(lost)} WAIT-acknowledged entries never handled: {lost[:10]}\n" \
                     f"{fleet.logs()}"
    for d in daemons:
        assert d.output().count(ANNOUNCED) >= len(results), d.output()
    assert not slow, (f"a daemon kept waiting more than {RESUME_AFTER_SWITCH}s after a "
                      f"+switch-master announcement:\n" + "\n".join(slow))


def test_paused_primary_split_brain(
    cluster: SentinelCluster, fleet: Fleet, r: redis.Redis, stream: str,
) -> None:
    """SIGSTOP the primary until the sentinels promote the replica, then SIGCONT it: for a
    moment two servers say they are the primary.

    Must hold: the daemons follow the new primary and handle the entries published after the
    SIGCONT; the old primary is demoted to a replica of the new one (ROLE); no daemon exits;
    no WAIT-acknowledged entry is lost. Printed: the writes the resumed old primary accepted
    (sent to it directly, without WAIT, until it answered READONLY) and that the demotion then
    threw away — Redis's own window, which `--wait-replicas` / `min-replicas-to-write` close."""
    streams = [stream_cfg(stream)]
    daemons = [fleet.start(name, streams, cluster=cluster) for name in ("sb1", "sb2")]
    for d in daemons:
        d.wait_ready()
    with Producer(cluster, stream) as producer:
        since = int(time.time() * 1000)
        wait_for(lambda: producer.acked_since(since) >= 20, DEADLINE,
                 what="20 WAIT-acknowledged entries before the pause")
        old_port = cluster.wait_healthy()
        old = cluster.servers[old_port]
        os.kill(old.pid, signal.SIGSTOP)
        t_stop = time.time()
        try:
            new_port = cluster.wait_failover(old_port, DEADLINE)
        finally:
            os.kill(old.pid, signal.SIGCONT)
        t_cont = time.time()
        # Write to the resumed old primary directly, as a client that never asked the
        # sentinels would, until it refuses.
        stale_writes: list[str] = []
        refused = ""
        direct = redis.Redis(port=old_port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        try:
            end = time.monotonic() + DEADLINE
            while time.monotonic() < end:
                try:
                    stale_writes.append(direct.xadd(
                        stream, {"payload": json.dumps({"split-brain": True})}).decode())
                except redis.ReadOnlyError as exc:
                    refused = str(exc)
                    break
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    refused = f"{type(exc).__name__}: {exc}"
                    break
                time.sleep(0.01)  # pacing the writes
        finally:
            direct.close()
        t_refused = time.time()
        wait_for(lambda: role(old_port) == ("slave", new_port), DEADLINE,
                 what=fleet.explain("the old primary demoted", cluster.describe))
        t_demoted = time.time()
        cont_ms = int(t_cont * 1000)
        stop_ms = int(t_stop * 1000)
        first = wait_for(lambda: [h.at for h in handled(r, stream) if id_ms(h.id) > stop_ms], DEADLINE,
                         what=fleet.explain("an entry published after the SIGSTOP handled"))
        t_first = min(first)
        wait_for(lambda: producer.acked_since(cont_ms) >= 20, DEADLINE,
                 what="20 WAIT-acknowledged entries after the SIGCONT")
    acked = list(producer.acked)
    after_cont = [i for i in acked if id_ms(i) > cont_ms]
    wait_for(lambda: not set(after_cont) - handled_ids(r, stream), DEADLINE,
             what=fleet.explain("the entries published after the SIGCONT handled"))
    lost = settle_lost(r, stream, acked)
    primary = cluster.servers[new_port].client()
    try:
        entries = primary.xrange(stream)
        remaining = assert_drained(primary, r, stream, fleet)
    finally:
        primary.close()
    fleet.assert_running()
    # Ids are milliseconds: a stale write and a real entry can share one, so tell them apart
    # by the body.
    genuine = {e[0].decode() for e in entries if b"split-brain" not in e[1][b"payload"]}
    survivors = {e[0].decode() for e in entries if b"split-brain" in e[1][b"payload"]}
    stale_lost = [i for i in stale_writes if i not in survivors]
    stale_run = sorted((set(stale_writes) - genuine) & handled_ids(r, stream))
    print(f"\n[split-brain] paused {old_port}; sentinels promoted {new_port} after "
          f"{t_cont - t_stop:.2f}s; resumed; first entry published after the SIGSTOP handled "
          f"{t_first - t_stop:.2f}s after it")
    print(f"[split-brain] the resumed old primary accepted {len(stale_writes)} direct writes "
          f"for {t_refused - t_cont:.2f}s before refusing ({refused or 'never refused'}); "
          f"demoted (ROLE slave of {new_port}) {t_demoted - t_cont:.2f}s after the SIGCONT")
    print(f"[split-brain] {len(stale_lost)} of those writes are gone after the demotion (the "
          f"old primary resynced from the new one); {len(stale_run)} of them were run by a "
          f"daemon still connected to the old primary")
    print(f"[split-brain] {len(acked)} WAIT-acknowledged, {len(lost)} lost; {remaining} "
          f"entries in the new primary's stream, all handled")
    for d in daemons:
        print(f"[split-brain] {d.log_path.name}: "
              f"{d.output().count('failover: the primary is now')} +switch-master announcements")
    assert not lost, f"WAIT-acknowledged entries never handled: {lost[:10]}\n{fleet.logs()}"


def test_daemon_waits_for_a_primary_behind_sentinel(
    cluster: SentinelCluster, fleet: Fleet, r: redis.Redis, stream: str,
) -> None:
    """Kill both servers (the replica first, so that nothing can be promoted), then start a
    [redis.sentinel] daemon: the sentinels answer but have no primary to give. Then start
    the primary again, and its replica.

    Must hold: the daemon does not exit while there is no primary, says Redis is unavailable,
    becomes ready once the primary is back, and handles entries published after that."""
    primary_port = cluster.wait_healthy()
    primary = cluster.servers[primary_port]
    replica = cluster.running_replicas(primary_port)[0]
    replica.kill()
    primary.kill()
    wait_for(lambda: all("o_down" in f for f in cluster.primary_flags()), DEADLINE,
             what=fleet.explain("every sentinel to see the primary down", cluster.describe))
    d = fleet.start("sw1", [stream_cfg(stream)], cluster=cluster)
    wait_for(lambda: "no sentinel named a primary" in d.output() or d.proc.poll() is not None,
             DEADLINE,
             what=fleet.explain("the daemon to report that Sentinel has no primary"))
    fleet.assert_running()
    assert "ready:" not in d.output()
    t_back = time.time()
    cluster.restart_as_replica(primary, None)
    cluster.restart_as_replica(replica, primary_port)
    wait_for(lambda: "ready:" in d.output() or d.proc.poll() is not None, DEADLINE,
             what=fleet.explain("the daemon ready"))
    t_ready = time.time()
    fleet.assert_running()
    client = cluster.servers[primary_port].client()
    try:
        ids = [client.xadd(stream, {"payload": json.dumps({"n": n})}).decode()
               for n in range(20)]
        wait_for(lambda: not set(ids) - handled_ids(r, stream), DEADLINE,
                 what=fleet.explain("the entries handled"))
        wait_for(lambda: pending_count(client, stream) == 0, DEADLINE,
                 what=fleet.explain("the PEL drains"))
    finally:
        client.close()
    fleet.assert_running()
    print(f"\n[no-primary] the daemon was ready {t_ready - t_back:.2f}s after the primary "
          f"came back")


# --------------------------------------------------------------------------- standalone


def test_restarted_standalone_server_loses_nothing(
    fleet: Fleet, r: redis.Redis, stream: str, tmp_path: Path,
) -> None:
    """Kill -9 and restart the only server (no Sentinel; `--appendonly yes --appendfsync
    always`) under two daemons.

    Must hold: entries published and handled before the restart are still in the stream and
    still acked after it (the PEL is empty); the daemons reconnect without exiting; entries
    published after the restart are handled; every published entry was handled at least once
    and the PEL drains."""
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    target = Server(port=free_port(), data_dir=tmp_path / "aof", extra=aof).start()
    restarted: Server | None = None
    try:
        streams = [stream_cfg(stream)]
        daemons = [fleet.start(name, streams, url=target.url) for name in ("sa1", "sa2")]
        for d in daemons:
            d.wait_ready()
        client = target.client()
        before = [client.xadd(stream, {"payload": json.dumps({"n": n})}).decode()
                  for n in range(50)]
        client.close()
        wait_for(lambda: not set(before) - handled_ids(r, stream), DEADLINE,
                 what=fleet.explain("entries before the restart handled"))
        check = target.client()
        wait_for(lambda: pending_count(check, stream) == 0, DEADLINE, what="PEL empty")
        check.close()
        target.kill()
        restarted = Server(port=target.port, data_dir=target.data_dir, extra=aof).start()
        client = restarted.client()
        try:
            kept = [e[0].decode() for e in client.xrange(stream)]
            assert kept == before, "the AOF lost entries"
            assert pending_count(client, stream) == 0, "acks were lost in the restart"
            after = [client.xadd(stream, {"payload": json.dumps({"n": n})}).decode()
                     for n in range(50, 100)]
            wait_for(lambda: not set(after) - handled_ids(r, stream), DEADLINE,
                     what=fleet.explain("entries after the restart handled"))
            assert_drained(client, r, stream, fleet)
        finally:
            client.close()
        fleet.assert_running()
        for d in daemons:
            # A daemon with nothing to do logs it when its blocking read (≤ 1 s) returns.
            d.wait_output(READING_AGAIN, timeout=10)
        runs = handled(r, stream)
        again = [h.id for h in runs if h.id in set(before)]
        print(f"\n[restart] {len(before)} before, {len(after)} after; {len(again) - len(before)} "
              f"entries from before the restart were run again")
    finally:
        for srv in (target, restarted):
            if srv is not None:
                srv.stop()


@pytest.mark.parametrize("held", [False, True], ids=["running", "held-past-lease"])
def test_deleted_group_is_recreated_without_skipping_entries(
    fleet: Fleet, server: Server, r: redis.Redis, stream: str, held: bool,
) -> None:
    """XGROUP DESTROY the group under a running daemon (concurrency 1) while one entry is
    pending — its handler running (sleep 1 s, claim-idle 60 s: no lease extension meanwhile)
    or, with `held`, hanging past a lease interval (claim-idle 1.5 s: edged extends the lease
    every 375 ms) — and five entries are unread behind it; then publish three more and let
    the handler finish (with `held`, only once the daemon has logged twice that it could not
    extend the lease: its lease loop met the missing group and went on).

    Must hold: the daemon logs that the group is gone and recreates it; it does not exit;
    every entry published is handled at least once (none skipped); the PEL drains."""
    claim_idle = "1500ms" if held else "60s"
    d = fleet.start("gl1", [stream_cfg(stream, concurrency=1, **{"claim-idle": claim_idle})],
                    url=server.url)
    d.wait_ready()

    def add(body: dict[str, Any]) -> str:
        return r.xadd(stream, {"payload": json.dumps(body)}).decode()

    first = [add({"n": n}) for n in range(3)]
    wait_for(lambda: not set(first) - handled_ids(r, stream), DEADLINE,
             what=fleet.explain("the first entries handled"))
    busy = add({"hang": True} if held else {"sleep": 1.0})
    unread = [add({"n": n}) for n in range(3, 8)]
    wait_for(lambda: any(x.decode().startswith(busy) for x in r.lrange(f"{stream}:started", 0, -1)),
             DEADLINE,
             what=fleet.explain("the busy entry started"))
    assert int(r.xpending(stream, GROUP)["pending"]) == 1
    r.xgroup_destroy(stream, GROUP)
    later = [add({"n": n}) for n in range(8, 11)]
    if held:
        # The lease loop meets the missing group (NOGROUP) twice, with the entry held.
        d.wait_output("could not extend", timeout=DEADLINE, count=2)
        fleet.assert_running()
        r.set(f"{stream}:release", 1)
    everything = [*first, busy, *unread, *later]
    wait_for(lambda: not set(everything) - handled_ids(r, stream) or d.proc.poll() is not None, DEADLINE,
             what=fleet.explain("every entry handled"))
    fleet.assert_running()
    assert not set(everything) - handled_ids(r, stream)
    assert "is gone" in d.output(), d.output()
    wait_for(lambda: pending_count(r, stream) == 0, DEADLINE,
             what=fleet.explain("the PEL drains"))
    fleet.assert_running()
    print(f"\n[group] recreated; {len(handled(r, stream))} runs for {len(everything)} entries")
