"""edged on a real Redis Cluster: three primaries, three replicas (tests/cluster.py).

Daemons run as `edged start -c` with `[redis.cluster] nodes`; the operator commands run with
the same config. Handlers record what they ran on the single test server (``server``), so
what a test checks never depends on the cluster it is testing. Stream names are picked so
that they live on different primaries, which is where CROSSSLOT errors and per-node
connections would show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from edged.local_cluster import LocalCluster
from edged.sharding import key_slot, shard_for_key, shard_names
from tests.cluster import cluster, rc  # noqa: F401 - fixtures
from tests.servers import Server
from tests.support import DaemonProcess, Fleet, run_edged, wait_for, write_config
from tests.support import test_env as edged_env

GROUP = "edged"


def on_three_primaries(cluster: LocalCluster, prefix: str) -> list[str]:  # noqa: F811
    """Three stream names whose slots belong to three different primaries."""
    names: dict[str, str] = {}
    i = 0
    while len(names) < 3:
        name = f"{prefix}{i}"
        names.setdefault(cluster.node_for_slot(key_slot(name)).address, name)
        i += 1
    return sorted(names.values())


def cluster_table(cluster: LocalCluster) -> dict[str, Any]:  # noqa: F811
    return {"cluster": {"nodes": cluster.seeds()}}


def stream_cfg(stream: str, **extra: Any) -> dict[str, Any]:
    return {"stream": stream, "handler": "tests.handlers:record", "start-id": "0",
            "claim-idle": "1s", "claim-interval": "200ms", **extra}


def cli(config: Path, *args: str, input: str | None = None) -> Any:
    return run_edged(*args, "-c", str(config), input=input)


def handled(recorder: redis.Redis, stream: str) -> list[str]:
    return [m.decode().split()[0] for m in recorder.lrange(f"{stream}:handled", 0, -1)]


def make_fleet(server: Server, tmp_path: Path, spawned: list[DaemonProcess],
               cluster: LocalCluster) -> Fleet:  # noqa: F811
    return Fleet(server.url, tmp_path, spawned, redis=cluster_table(cluster))


def admin_config(tmp_path: Path, cluster: LocalCluster,  # noqa: F811
                 streams: list[dict[str, Any]]) -> Path:
    return write_config(tmp_path / "admin.toml", streams, redis=cluster_table(cluster))


def test_daemons_consume_streams_on_every_primary_without_crossslot(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """Two daemons consume three streams that live on three different primaries; entries
    are published with `edged publish -c` (the cluster config), some handled, some rejected.

    Must hold: every entry is handled exactly once or dead-lettered; each stream's rejected
    entry sits in its dead-letter stream ``{<stream>}:dead``, which shares the stream's slot;
    the daemons' own keys are ``{edged}:...`` (one slot); ``edged status``, ``groups``,
    ``pending`` and ``dlq list`` answer from the cluster config (no CROSSSLOT anywhere); no
    daemon logged an error."""
    streams = on_three_primaries(cluster, f"cl:{tmp_path.name[-6:]}:")
    cfgs = [stream_cfg(s) for s in streams]
    fleet = make_fleet(server, tmp_path, spawned, cluster)
    daemons = [fleet.start(name, cfgs, **{"heartbeat-interval": "200ms"}) for name in ("a", "b")]
    for d in daemons:
        d.wait_ready()
    for node in cluster.primaries():
        with node.client() as c:
            c.config_resetstat()
    config = admin_config(tmp_path, cluster, cfgs)
    published: dict[str, list[str]] = {}
    for s in streams:
        res = cli(config, "publish", s, "-", input="".join(f'{{"n": {i}}}\n' for i in range(20)))
        assert res.returncode == 0, res.stderr
        published[s] = res.stdout.split()
        res = cli(config, "publish", s, '{"reject": "bad on purpose"}')
        assert res.returncode == 0, res.stderr
        published[s + ":rejected"] = res.stdout.split()
    for s in streams:
        wait_for(lambda s=s: sorted(handled(r, s)) == sorted(published[s]) and
                 rc.xlen("{" + s + "}:dead") == 1,
                 what=lambda s=s: f"{s}: handled {len(handled(r, s))}/20, "
                                  f"dead {rc.xlen('{' + s + '}:dead')}\n{fleet.logs()}")
        dead = rc.xrange("{" + s + "}:dead")
        assert dead[0][1][b"edged-id"].decode() == published[s + ":rejected"][0]
        assert key_slot("{" + s + "}:dead") == key_slot(s)
        wait_for(lambda s=s: rc.xpending(s, GROUP)["pending"] == 0, what=f"{s} PEL drained")
    # The readers route XREADGROUP by its STREAMS keys themselves: no COMMAND GETKEYS round
    # trips to the server on the hot path (redis-py would send two before every read).
    getkeys = 0
    for node in cluster.primaries():
        with node.client() as c:
            getkeys += int(c.info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0))
    assert getkeys == 0, f"COMMAND GETKEYS sent {getkeys} times"
    own = sorted(k.decode() for k in rc.scan_iter(match="*edged*", target_nodes=rc.PRIMARIES))
    assert {"{edged}:seen", "{edged}:daemon:a", "{edged}:daemon:b"} <= set(own), own
    assert all(k.startswith("{edged}:") for k in own), own
    status = cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    seen = {d["consumer"] for d in json.loads(status.stdout)["daemons"]}
    assert seen == {"a", "b"}
    for command in (["groups", "--json"], ["pending", streams[0], "--json"],
                    ["dlq", "list", streams[1], "--json"]):
        res = cli(config, *command)
        assert res.returncode == 0 and "CROSSSLOT" not in res.stdout + res.stderr, (command, res)
    dlq = json.loads(cli(config, "dlq", "list", streams[1], "--json").stdout)
    assert [e["original_id"] for e in dlq["entries"]] == published[streams[1] + ":rejected"]
    for d in daemons:
        assert " ERROR " not in d.output() and "CROSSSLOT" not in d.output(), d.output()


def test_dead_letter_replay_on_cluster(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """An entry rejected on a cluster, replayed with `edged dlq replay -c`: the replay's
    add-then-check transaction runs in the stream's slot.

    Must hold: the replay adds one copy to the stream and takes the entry out of the
    dead-letter stream; the copy (same payload) is rejected again, so the dead-letter stream
    then holds exactly one entry, the copy's; the group's PEL drains."""
    stream = f"cl:{tmp_path.name[-6:]}:replay"
    cfgs = [stream_cfg(stream, **{"max-deliveries": 1})]
    fleet = make_fleet(server, tmp_path, spawned, cluster)
    fleet.start("a", cfgs).wait_ready()
    config = admin_config(tmp_path, cluster, cfgs)
    res = cli(config, "publish", stream, '{"reject": "first time"}')
    assert res.returncode == 0, res.stderr
    dead = "{" + stream + "}:dead"
    wait_for(lambda: rc.xlen(dead) == 1, what=lambda: f"dead-lettered\n{fleet.logs()}")
    res = cli(config, "dlq", "replay", stream, "--all", "--json")
    assert res.returncode == 0, res.stderr
    replayed = json.loads(res.stdout)["replayed"]
    assert len(replayed) == 1, res.stdout
    copy = replayed[0]["new_id"]
    wait_for(lambda: [e[1][b"edged-id"].decode() for e in rc.xrange(dead)] == [copy],
             what=lambda: f"replayed copy {copy} rejected again: {rc.xrange(dead)}\n{fleet.logs()}")
    assert len(rc.xrange(stream)) == 2
    wait_for(lambda: rc.xpending(stream, GROUP)["pending"] == 0, what="PEL drained")


def test_reclaim_after_sigkill_on_cluster(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """Daemon "a" takes entries whose handler hangs, and is SIGKILLed; daemon "b" reclaims
    them with XAUTOCLAIM on the cluster (claim-idle 1 s).

    Must hold: every entry is handled by "b" (recorded with b's name), and the PEL drains."""
    stream = f"cl:{tmp_path.name[-6:]}:reclaim"
    cfgs = [stream_cfg(stream, concurrency=4)]
    fleet = make_fleet(server, tmp_path, spawned, cluster)
    a = fleet.start("a", cfgs)
    a.wait_ready()
    config = admin_config(tmp_path, cluster, cfgs)
    res = cli(config, "publish", stream, "-", input='{"hang": true}\n' * 4)
    ids = res.stdout.split()
    wait_for(lambda: r.llen(f"{stream}:started") == 4, what=lambda: f"a started 4\n{a.output()}")
    a.kill()
    r.set(f"{stream}:release", 1)
    b = fleet.start("b", cfgs)
    b.wait_ready()
    wait_for(lambda: sorted(handled(r, stream)) == sorted(ids),
             what=lambda: f"b handled all 4: {handled(r, stream)}\n{fleet.logs()}")
    assert {m.decode().split()[1] for m in r.lrange(f"{stream}:handled", 0, -1)} == {"b"}
    wait_for(lambda: rc.xpending(stream, GROUP)["pending"] == 0, what="PEL drained")


def test_sharded_stream_spreads_over_primaries_and_keeps_key_order(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """A logical stream of 6 shards read by two daemons with concurrency 6 (shared by the
    shards); 60 entries published with --key k1, 60 with --key k2, 60 without a key.

    Must hold: the 6 shards sit on all 3 primaries, two each; every entry with one key is
    in that key's shard (shard_for_key) and in publish order there; the keyless ones spread
    evenly (10 per shard); every entry is handled; every shard's PEL drains."""
    stream = f"cl{tmp_path.name[-6:].replace('_', '')}"
    names = shard_names(stream, 6)
    owners = [cluster.node_for_slot(key_slot(n)).address for n in names]
    assert sorted(owners.count(o) for o in set(owners)) == [2, 2, 2], owners
    cfgs = [stream_cfg(stream, shards=6, concurrency=6)]
    fleet = make_fleet(server, tmp_path, spawned, cluster)
    daemons = [fleet.start(name, cfgs) for name in ("a", "b")]
    for d in daemons:
        d.wait_ready()
    config = admin_config(tmp_path, cluster, cfgs)
    out: dict[str, list[tuple[str, str]]] = {}
    for key in ("k1", "k2", None):
        args = ["publish", stream, "-"] + (["--key", key] if key else [])
        res = cli(config, *args, input="".join(f'{{"sleep": 0.01, "n": {i}}}\n' for i in range(60)))
        assert res.returncode == 0, res.stderr
        out[key or ""] = [tuple(line.split()) for line in res.stdout.splitlines()]  # type: ignore[misc]
    for key in ("k1", "k2"):
        shard = names[shard_for_key(key, 6)]
        assert {s for s, _ in out[key]} == {shard}
        in_stream = [eid.decode() for eid, _ in rc.xrange(shard)]
        ours = [eid for _, eid in out[key]]
        assert [e for e in in_stream if e in set(ours)] == ours  # publish order
    spread = [s for s, _ in out[""]]
    assert sorted(spread.count(n) for n in names) == [10] * 6
    every = {(s, e) for entries in out.values() for s, e in entries}
    wait_for(lambda: {(s, h) for s in names for h in handled(r, s)} == every,
             what=lambda: f"all 180 handled: {sum(len(handled(r, s)) for s in names)}\n"
                          f"{fleet.logs()}")
    for n in names:
        wait_for(lambda n=n: rc.xpending(n, GROUP)["pending"] == 0, what=f"{n} PEL drained")


def test_daemon_and_operator_as_least_privilege_users_on_cluster(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """The documented ACL rules plus acl.CLUSTER, on every node (ACL SETUSER is per node): a
    daemon as the DAEMON user (keys: the stream, its `{stream}:dead`, `{edged}:*`) consumes
    and dead-letters; `edged dlq list` runs as the INSPECT user, `dlq replay` and `publish
    --wait-replicas 1` as the OPERATE user.

    Must hold: all of it works, and ACL LOG on every node records no denial for any of them."""
    import uuid

    from edged import acl

    stream = f"cl:{tmp_path.name[-6:]}:acl"
    keys = f"~{stream} ~{{{stream}}}:dead ~{{edged}}:*"
    users: dict[str, tuple[str, str]] = {}
    for role, rule in (("daemon", acl.DAEMON), ("inspect", acl.INSPECT),
                       ("operate", acl.OPERATE)):
        users[role] = (f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex)
        for node in cluster.live():
            with node.client() as c:
                c.execute_command("ACL", "SETUSER", *acl.setuser_args(
                    users[role][0], users[role][1], keys, f"{rule} {acl.CLUSTER}"))

    def config(role: str, **extra: Any) -> Path:
        user, password = users[role]
        secret = tmp_path / f"{role}.password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        return write_config(tmp_path / f"{role}.toml", [stream_cfg(stream)],
                            redis={"username": user, "password-file": str(secret),
                                   **cluster_table(cluster)}, **extra)

    d = DaemonProcess(config("daemon", daemon={"consumer": "a"}), None, tmp_path / "a.log",
                      env=edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER="a"))
    spawned.append(d)
    d.wait_ready()
    res = cli(config("operate"), "publish", stream, "-", "--wait-replicas", "1",
              input='{"n": 1}\n{"reject": "no"}\n')
    assert res.returncode == 0, res.stderr
    first = res.stdout.split()[0]
    wait_for(lambda: handled(r, stream) == [first] and rc.xlen("{" + stream + "}:dead") == 1,
             what=lambda: f"handled and dead-lettered\n{d.output()}")
    listed = cli(config("inspect"), "dlq", "list", stream, "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["entries"], listed.stderr
    replayed = cli(config("operate"), "dlq", "replay", stream, "--all", "--json")
    assert replayed.returncode == 0 and json.loads(replayed.stdout)["replayed"], replayed.stderr
    for node in cluster.live():
        with node.client() as c:
            for user, _ in users.values():
                rows = c.execute_command("ACL", "LOG", "128")
                mine = [row for row in rows if user.encode() in row]
                assert mine == [], (node.address, mine)


def test_daemon_started_before_its_cluster_waits_for_it(
    server: Server, tmp_path: Path, spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """A daemon whose seed nodes do not answer yet (the cluster is not started) keeps
    retrying with a warning instead of exiting; once a cluster forms on those ports it becomes
    ready and consumes. A config whose dead-letter stream is in another slot is refused by
    `edged config validate` with exit 78 naming the field.

    Must hold: the daemon is alive and not ready before, ready after; the entry published then
    is handled; the bad config exits 78 with `streams[0].dead-letter` in the message."""
    from edged.local_cluster import free_cluster_ports, start_local_cluster
    from tests.servers import server_binary

    ports = free_cluster_ports(3)
    seeds = {"cluster": {"nodes": [f"127.0.0.1:{p}" for p in ports]}}
    stream = f"cl:{tmp_path.name[-6:]}:late"
    fleet = Fleet(server.url, tmp_path, spawned, redis=seeds)
    d = fleet.start("a", [stream_cfg(stream)])
    wait_for(lambda: "unavailable" in d.output() or "cannot" in d.output(),
             what=lambda: f"a warning that the cluster is away\n{d.output()}")
    assert d.proc.poll() is None and "ready:" not in d.output(), d.output()
    local = start_local_cluster(server_binary(), tmp_path / "late", primaries=3,
                                replicas_per_primary=0, ports=ports)
    try:
        d.wait_ready(timeout=60)
        config = write_config(tmp_path / "late.toml", [stream_cfg(stream)], redis=seeds)
        res = cli(config, "publish", stream, '{"late": true}')
        assert res.returncode == 0, res.stderr
        wait_for(lambda: handled(r, stream) == res.stdout.split(), what=lambda: d.output())
    finally:
        d.stop()
        local.stop()
    bad = write_config(tmp_path / "bad.toml", [stream_cfg(stream, **{"dead-letter": "other"})],
                       redis=seeds)
    res = cli(bad, "config", "validate")
    assert res.returncode == 78 and "streams[0].dead-letter" in res.stderr, res.stderr


def test_retention_trims_on_the_cluster(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """A stream with retention 1m on the cluster: 20 entries with ids from 2 minutes ago and
    5 new ones, all read and acked by the daemon's group.

    Must hold: the trimmer (its lease under {edged}:) trims the 20 old entries and keeps the 5
    new ones; `edged trim --dry-run` and `edged groups` answer on the cluster (the trim script
    runs read-only in the stream's slot)."""
    import time

    stream = f"cl:{tmp_path.name[-6:]}:ret"
    old_ms = int(time.time() * 1000) - 120_000
    old = [rc.xadd(stream, {"payload": b"{}"}, id=f"{old_ms}-{i}") for i in range(20)]
    cfgs = [stream_cfg(stream, retention="1m", **{"trim-interval": "200ms"})]
    fleet = make_fleet(server, tmp_path, spawned, cluster)
    d = fleet.start("a", cfgs)
    d.wait_ready()
    config = admin_config(tmp_path, cluster, cfgs)
    new = cli(config, "publish", stream, "-", input='{"n": 1}\n' * 5).stdout.split()
    wait_for(lambda: len(handled(r, stream)) == 25, what=lambda: f"25 handled\n{d.output()}")
    wait_for(lambda: [e.decode() for e, _ in rc.xrange(stream)] == new,
             what=lambda: f"old entries trimmed: {rc.xlen(stream)} left\n{d.output()}")
    assert not set(old) & {e for e, _ in rc.xrange(stream)}
    for command in (["trim", stream, "--dry-run", "--json"], ["groups", "--json"]):
        res = cli(config, *command)
        assert res.returncode == 0 and "CROSSSLOT" not in res.stderr, (command, res.stderr)


def test_a_slot_map_learned_without_a_slot_is_learned_again(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """A daemon starts while no node serves its stream's slot (taken off every node with
    CLUSTER DELSLOTSRANGE, as in a cluster still forming); then the slot is given back to
    its owner.

    Must hold: the daemon does not exit; once the slot is served again it learns the slot
    map again by itself, and an entry published then is handled. (redis-py raised "slot not
    covered" while picking the node and kept the stale map for good.)"""
    stream = f"cl:{tmp_path.name[-6:]}:slot"
    slot = key_slot(stream)
    owner = cluster.node_for_slot(slot)
    for node in cluster.live():
        with node.client() as c:
            c.execute_command("CLUSTER", "DELSLOTSRANGE", slot, slot)
    try:
        fleet = make_fleet(server, tmp_path, spawned, cluster)
        d = fleet.start("a", [stream_cfg(stream)])
        wait_for(lambda: "not covered" in d.output(), what=lambda: f"slot not covered\n{d.output()}")
    finally:
        with owner.client() as c:
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", slot, slot)
        cluster.wait_ok(30)
    d.wait_ready(timeout=60)
    config = admin_config(tmp_path, cluster, [stream_cfg(stream)])
    res = cli(config, "publish", stream, '{"back": true}')
    assert res.returncode == 0, res.stderr
    wait_for(lambda: handled(r, stream) == res.stdout.split(), 30, what=lambda: d.output())
    assert d.proc.poll() is None


def test_the_outbox_forwards_to_every_primary_and_waits_for_a_replica(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """A daemon with an outbox on the cluster (wait-replicas = 1: the XADDs and WAIT go to each
    stream's own primary) forwards entries published through it, with `edged publish` and the
    cluster config, to streams on three primaries and to the key's shard of a sharded stream
    it consumes. Must hold: every entry arrives in the order published, carrying the message
    id the CLI printed, and the sharded entries reach the handler."""
    tag = tmp_path.name[-6:]
    streams = on_three_primaries(cluster, f"ob:{tag}:")
    sharded = f"obs:{tag}"
    cfg = write_config(
        tmp_path / "ob.toml", [stream_cfg(sharded, shards=3, concurrency=3)],
        daemon={"consumer": "ob-cluster"}, redis=cluster_table(cluster),
        outbox={"path": str(tmp_path / "outbox"), "socket": str(tmp_path / "pub.sock"),
                "wait-replicas": 1, "wait-timeout": "5s"},
    )
    d = DaemonProcess(cfg, None, tmp_path / "ob.log",
                      env=edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER="ob"))
    spawned.append(d)
    d.wait_ready(60)
    printed: dict[str, list[str]] = {}
    for s in streams:
        out = cli(tmp_path / "ob.toml", "publish", s, "-", input="".join(
            json.dumps({"n": i}) + "\n" for i in range(3)))
        assert out.returncode == 0, out.stderr
        printed[s] = out.stdout.split()
    out = cli(cfg, "publish", sharded, "-", "--key", "dev-1",
              input="".join(json.dumps({"n": i}) + "\n" for i in range(5)))
    assert out.returncode == 0, out.stderr
    shard = shard_names(sharded, 3)[shard_for_key("dev-1", 3)]
    lines = [line.split() for line in out.stdout.splitlines()]
    assert {line[0] for line in lines} == {shard}
    printed[shard] = [line[1] for line in lines]
    for s, msgids in printed.items():
        wait_for(lambda s=s, msgids=msgids: rc.xlen(s) == len(msgids), 30,  # type: ignore[misc]
                 what=f"{s} forwarded")
        got = [fields for _, fields in rc.xrange(s)]
        assert [f[b"edged-msgid"].decode() for f in got] == msgids
        assert [json.loads(f[b"payload"])["n"] for f in got] == list(range(len(msgids)))
    wait_for(lambda: len(handled(r, shard)) == 5, 30, what="the sharded entries handled")
    assert "ERROR" not in d.output()
