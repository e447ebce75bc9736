"""Guards the promise that a Sentinel failover is followed at once: edged "drops every
connection to the old primary the moment a failover is announced" (`+switch-master`), the
reader's own connection included (README "Failover runbook", docs/design.md "Failover",
edged/connect/sentinel.py, edged/consume/wire.py).

The other failover tests kill the old primary: its connections then fail by themselves, and a
daemon that never dropped them recovers as fast. Here the old primary is only paused
(SIGSTOP): its sockets stay open and silent, so a connection left on it waits for its socket
timeout. The daemon's socket timeout is `read-block` + 10 s (edged/daemon/run.py), and the
blocking read in flight at the SIGSTOP was sent at most one `read-block` (1 s) before it: a
daemon that does not drop its connections on the announcement handles nothing new until about
10 s after the SIGSTOP. One that drops them reads from the new primary right after the switch.

A primary, a replica and three sentinels (tests/sentinel_cluster.py); the daemon is an
`edged start` process whose handler records each run on the session server.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.sentinel_cluster import SentinelCluster, role, write_sentinel_config
from tests.servers import Server
from tests.support import DaemonProcess, wait_for
from tests.support import test_env as edged_env

# Its deadline (8 s after the SIGSTOP) sits between today's ~3 s and the broken build's ~11 s:
# a failover slowed past 7 s by a noisy machine fails it. It runs in the mutation check
# (python -m tests.mutants sets EDGED_TIGHT_TESTS=1), not in every suite run.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("EDGED_TIGHT_TESTS"),
                       reason="tight failover deadline: set EDGED_TIGHT_TESTS=1 (the mutation check does)"),
]

GROUP = "edged"
DEADLINE = 20.0
# The daemon's socket timeout: read-block (1 s, the default) + 10 s (edged/daemon/run.py).
SOCKET_TIMEOUT = 1.0 + 10.0
# A daemon still on the paused primary times out no sooner than SOCKET_TIMEOUT - read-block
# after the SIGSTOP (its last blocking read may have been sent up to read-block before).
# The entry published on the new primary must be handled by this time after the SIGSTOP: 2 s
# short of that, so a daemon that only recovers by the timeout fails; and with room for a
# forced failover (1-3 s on loopback) and a reconnect (milliseconds) on a loaded machine.
HANDLED_WITHIN = SOCKET_TIMEOUT - 1.0 - 2.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    c = SentinelCluster(tmp_path / "cluster")
    try:
        c.start()
        yield c
    finally:
        c.stop()  # SIGCONTs a paused server before stopping it


def handled(recorder: redis.Redis, stream: str) -> dict[str, float]:
    """id -> when tests.handlers:record_timed finished it (wall clock)."""
    out: dict[str, float] = {}
    for raw in recorder.lrange(f"{stream}:handled", 0, -1):
        entry_id, _consumer, _delivery, at = raw.decode().split()
        out.setdefault(entry_id, float(at))
    return out


def all_see_it_down(cluster: SentinelCluster) -> bool:
    flags = cluster.primary_flags()
    return len(flags) == len(cluster.sentinels) and all(f & {"s_down", "o_down"} for f in flags)


def promoted(cluster: SentinelCluster, old_port: int) -> int | None:
    """The port of the new primary once a sentinel names it (it announced the switch) and it
    says it is one; None before. The others may learn of it a moment later."""
    for i, s in enumerate(cluster.sentinels):
        port = None if i in cluster.paused else s.current_primary()
        if port is not None and port != old_port and role(port) == ("master", None):
            return port
    return None


def force_failover(cluster: SentinelCluster) -> None:
    """SENTINEL FAILOVER on the first sentinel that takes it (no leader vote, which can split
    and cost seconds); one already under way (INPROG) will do as well."""
    errors = []
    for s in cluster.sentinels:
        try:
            with s.client() as c:
                c.execute_command("SENTINEL", "FAILOVER", cluster.service)
            return
        except redis.ResponseError as exc:
            if "INPROG" in str(exc):
                return
            errors.append(f"{s.address}: {exc}")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            errors.append(f"{s.address}: {exc}")
    raise AssertionError(f"no sentinel started a failover: {errors}\n{cluster.describe()}")


def test_failover_drops_connections_to_a_paused_primary(
    cluster: SentinelCluster, server: Server, r: redis.Redis, tmp_path: Path,
    spawned: list[DaemonProcess],
) -> None:
    """A [redis.sentinel] daemon handles an entry; the primary is SIGSTOPped (its sockets stay
    open, nothing answers) and, once every sentinel sees it down, a failover is forced. Once a
    sentinel names the promoted replica, an entry is published on it.

    Must hold: the daemon logs the announced failover, handles that entry within
    HANDLED_WITHIN of the SIGSTOP (a deadline short of the socket timeout that a daemon
    keeping its old connections would wait for) and does not exit. The paused server is
    resumed at the end."""
    stream = f"gf:{uuid.uuid4().hex[:10]}"
    consumer = f"gf-{uuid.uuid4().hex[:6]}"
    cfg = write_sentinel_config(
        tmp_path / "d.toml", cluster,
        [{"stream": stream, "group": GROUP, "handler": "tests.handlers:record_timed",
          "start-id": "0", "claim-interval": "200ms"}],
        daemon={"consumer": consumer, "shutdown-grace": "5s"},
    )
    env = edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER=consumer)
    d = DaemonProcess(cfg, None, tmp_path / "d.log", env=env)
    spawned.append(d)
    d.wait_ready()
    old_port = cluster.wait_healthy()
    old = cluster.servers[old_port]
    with old.client() as c:
        before = c.xadd(stream, {"payload": json.dumps({"n": 0})}).decode()
    wait_for(lambda: before in handled(r, stream), DEADLINE,
             what=lambda: f"the first entry handled:\n{d.output()}")
    os.kill(old.pid, signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        # Every sentinel sees the paused primary down (1-2 s) before the failover is forced: a
        # sentinel that still called it healthy could send a reconnecting client back to it.
        wait_for(lambda: all_see_it_down(cluster), DEADLINE,
                 what=lambda: f"every sentinel to see the paused primary down:\n"
                              f"{cluster.describe()}")
        force_failover(cluster)
        new_port = wait_for(lambda: promoted(cluster, old_port), DEADLINE,
                            what=lambda: f"a failover away from {old_port}:\n{cluster.describe()}")
        t_switch = time.monotonic()
        with cluster.servers[new_port].client() as c:
            after = c.xadd(stream, {"payload": json.dumps({"n": 1})}).decode()
        remaining = HANDLED_WITHIN - (time.monotonic() - t_stop)
        assert remaining > 1.0, (
            f"the failover took {t_switch - t_stop:.1f}s after the SIGSTOP: too slow to tell "
            f"a daemon that follows it from one that waits for its socket timeout")
        wait_for(lambda: after in handled(r, stream) or d.proc.poll() is not None, remaining,
                 what=lambda: (f"the entry published on the new primary handled within "
                               f"{HANDLED_WITHIN:.0f}s of the SIGSTOP (failover after "
                               f"{t_switch - t_stop:.2f}s):\n{d.output()}"))
        took = time.monotonic() - t_stop
        assert d.proc.poll() is None, f"the daemon exited:\n{d.output()}"
        assert "failover: the primary is now" in d.output(), d.output()
    finally:
        os.kill(old.pid, signal.SIGCONT)
    print(f"\n[paused primary] failover {t_switch - t_stop:.2f}s after the SIGSTOP; entry on "
          f"the new primary handled {took:.2f}s after it")
