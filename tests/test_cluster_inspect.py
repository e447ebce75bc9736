"""Inspection and operator commands over sharded logical streams on a real Redis Cluster.

A logical stream of 6 shards spreads over the cluster's three primaries (two shards each), so
every command that works over its shards talks to every primary: one key per command, never a
multi-key command across slots. Daemons run as `edged start -c` with `[redis.cluster] nodes`
and record what their handlers ran on the single test server (``r``); the CLI runs with the
same cluster config. What the commands print is checked against what the shards themselves
say (XPENDING, XRANGE of each shard and of its dead-letter stream).
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from edged.ids import id_key
from edged.local_cluster import LocalCluster
from edged.sharding import shard_dead_letter, shard_for_key, shard_names
from tests.cluster import cluster, rc  # noqa: F401 - fixtures
from tests.servers import Server, free_port
from tests.support import DaemonProcess, Fleet, run_edged, wait_for, write_config

GROUP = "edged"
SHARDS = 6


# --------------------------------------------------------------------------- helpers


def cluster_table(cluster: LocalCluster) -> dict[str, Any]:  # noqa: F811
    return {"cluster": {"nodes": cluster.seeds()}}


def stream_cfg(stream: str, **extra: Any) -> dict[str, Any]:
    return {"stream": stream, "handler": "tests.handlers:record", "start-id": "0",
            "shards": SHARDS, "concurrency": 16, **extra}


def admin_config(tmp_path: Path, cluster: LocalCluster,  # noqa: F811
                 streams: list[dict[str, Any]]) -> Path:
    return write_config(tmp_path / "admin.toml", streams, redis=cluster_table(cluster))


def cli(config: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_edged(*args, "-c", str(config), input=input)


def cli_json(config: Path, *args: str) -> Any:
    res = cli(config, *args, "--json")
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return json.loads(res.stdout)


def key_for_shard(shard: int) -> str:
    """A key whose entries go to ``shard`` (shard_for_key)."""
    return next(k for i in range(10_000) if shard_for_key(k := f"k{i}", SHARDS) == shard)


def publish(config: Path, stream: str, shard: int, bodies: list[dict[str, Any]]) -> list[str]:
    """Publish to one shard of ``stream`` (through its key); the ids, checked to be there."""
    res = cli(config, "publish", stream, "-", "--key", key_for_shard(shard),
              input="".join(json.dumps(b) + "\n" for b in bodies))
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines()]
    assert {name for name, _ in rows} == {shard_names(stream, SHARDS)[shard]}, rows
    return [eid for _, eid in rows]


def pending_ids(rc: RedisCluster, stream: str) -> dict[str, tuple[str, int]]:  # noqa: F811
    """XPENDING of one shard: id → (consumer, deliveries)."""
    return {row["message_id"].decode(): (row["consumer"].decode(), row["times_delivered"])
            for row in rc.xpending_range(stream, GROUP, "-", "+", 100)}


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of /metrics as (name, labels, value)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = []
    for m in re.finditer(r"^(\w+)\{([^}]*)\} (\S+)$", body, re.MULTILINE):
        out.append((m[1], dict(re.findall(r'(\w+)="([^"]*)"', m[2])), float(m[3])))
    return out


def group_pending_gauges(port: int, names: list[str]) -> dict[str, float]:
    return {labels["stream"]: value for name, labels, value in scrape(port)
            if name == "edged_group_pending" and labels["stream"] in names}


# --------------------------------------------------------------------------- tests


def test_inspection_sums_shards_and_details_each(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """Daemon "a" reads the 6-shard stream ``live``; 6 entries whose handler hangs wait on
    shards 0 (2), 2 (1) and 5 (3). The 6-shard stream ``orph`` is only in the operator's
    config: its groups exist, and on shard 4 one entry is held by "ghost" (no heartbeat).

    Must hold: `pending` sums the shards (6, one consumer "a" with 6, lowest/highest id over
    all) and its JSON lists each shard with XPENDING's count; `pending --detail` lists the 6
    ids, each with the shard XPENDING has it in; `consumers` sums per name, `--detail` shows
    the shards; `groups` gives one row per logical stream: live OK with 6 pending over 6 shard
    rows, orph the worst verdicts of its shards (STUCK, ORPHANED from shard 4); `--detail`
    one row per shard, each naming its logical stream and index; `status` lists "a" with the
    logical stream; /metrics has edged_stream_shard_info for each shard and per-shard pending
    gauges adding up to 6 (the group sampler works on the cluster)."""
    live, orph = (f"{name}{tmp_path.name[-6:].replace('_', '')}" for name in ("live", "orph"))
    names, orph_names = shard_names(live, SHARDS), shard_names(orph, SHARDS)
    port = free_port()
    cfgs = [stream_cfg(live, **{"claim-idle": "30s"})]
    fleet = Fleet(server.url, tmp_path, spawned, redis=cluster_table(cluster))
    fleet.start("a", cfgs, listen=f"127.0.0.1:{port}", **{"heartbeat-interval": "200ms"}).wait_ready()
    config = admin_config(tmp_path, cluster, [
        *cfgs, stream_cfg(orph, **{"claim-idle": "100ms", "claim-interval": "100ms"})])
    for name in orph_names:
        rc.xgroup_create(name, GROUP, id="$", mkstream=True)
    rc.xadd(orph_names[4], {"payload": "{}"})
    rc.xreadgroup(GROUP, "ghost", {orph_names[4]: ">"})
    published = {shard: publish(config, live, shard, [{"hang": True}] * n)
                 for shard, n in ((0, 2), (2, 1), (5, 3))}
    every = sorted((i for ids in published.values() for i in ids), key=id_key)
    wait_for(lambda: sum(len(pending_ids(rc, n)) for n in names) == 6
             and sum(r.llen(f"{n}:started") for n in names) == 6,
             what=lambda: f"6 hanging entries\n{fleet.logs()}")
    wait_for(lambda: rc.xpending_range(orph_names[4], GROUP, "-", "+", 1, idle=300),
             what="ghost's entry idle past orph's claim-idle + claim-interval")
    try:
        check_pending(config, rc, live, names, published, every)
        check_consumers(config, live, names, published)
        check_groups_and_status(config, live, orph, names, published)
        wait_for(lambda: group_pending_gauges(port, names) == {
                     n: float(len(published.get(i, []))) for i, n in enumerate(names)},
                 what=lambda: f"pending gauges per shard: {group_pending_gauges(port, names)}")
        info = {labels["stream"]: labels for name, labels, _ in scrape(port)
                if name == "edged_stream_shard_info"}
        assert info == {n: {"stream": n, "group": GROUP, "logical": live, "shard": str(i)}
                        for i, n in enumerate(names)}
    finally:
        for n in names:
            r.set(f"{n}:release", 1)


def check_pending(config: Path, rc: RedisCluster, live: str, names: list[str],  # noqa: F811
                  published: dict[int, list[str]], every: list[str]) -> None:
    summary = cli_json(config, "pending", live)
    assert (summary["stream"], summary["pending"]) == (live, 6)
    assert (summary["lowest_id"], summary["highest_id"]) == (every[0], every[-1])
    assert [(c["consumer"], c["pending"], c["alive"]) for c in summary["consumers"]] == [("a", 6, True)]
    by_shard = {s["shard"]: s for s in summary["shards"]}
    assert set(by_shard) == set(range(SHARDS))
    for i, n in enumerate(names):
        assert by_shard[i]["stream"] == n
        assert by_shard[i]["pending"] == rc.xpending(n, GROUP)["pending"] == len(published.get(i, []))
    text = cli(config, "pending", live)
    assert text.stdout.splitlines()[0].startswith(f"{live} group {GROUP}: 6 pending over 6 shards")
    detail = cli_json(config, "pending", live, "--detail")
    assert [e["id"] for e in detail["entries"]] == every
    for e in detail["entries"]:
        assert e["id"] in pending_ids(rc, e["stream"]) and e["stream"] == names[e["shard"]]
    page = cli_json(config, "pending", live, "--detail", "--count", "4")
    rest = cli_json(config, "pending", live, "--detail", "--after", page["next_after"])
    assert [e["id"] for e in page["entries"] + rest["entries"]] == every
    table = cli(config, "pending", live, "--detail").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "SHARD", "STREAM"]
    assert {tuple(line.split()[:3]) for line in table[1:]} == {
        (i, str(s), names[s]) for s, ids in published.items() for i in ids}


def check_consumers(config: Path, live: str, names: list[str],
                    published: dict[int, list[str]]) -> None:
    report = cli_json(config, "consumers", live)
    assert [(c["consumer"], c["pending"], c["alive"]) for c in report["consumers"]] == [("a", 6, True)]
    assert {s["stream"]: sum(c["pending"] for c in s["consumers"]) for s in report["shards"]} == {
        n: len(published.get(i, [])) for i, n in enumerate(names)}
    table = cli(config, "consumers", live, "--detail").stdout.splitlines()
    assert table[0].split()[:3] == ["STREAM", "SHARD", "CONSUMER"]
    assert {(line.split()[0], line.split()[3]) for line in table[1:]} == {
        (n, str(len(published.get(i, [])))) for i, n in enumerate(names)}


def check_groups_and_status(config: Path, live: str, orph: str, names: list[str],
                            published: dict[int, list[str]]) -> None:
    report = cli_json(config, "groups", "--sample", "0s")
    rows = {g["stream"]: g for g in report["groups"]}
    assert set(rows) == {live, orph}
    g = rows[live]
    assert (g["pending"], g["consumers"], g["verdict"], g["dead_letter"]) == (6, 1, "OK", None)
    assert [(s["stream"], s["shard"], s["pending"]) for s in g["shards"]] == [
        (n, i, len(published.get(i, []))) for i, n in enumerate(names)]
    o = rows[orph]
    assert o["verdicts"] == ["STUCK", "ORPHANED"] and o["orphaned_consumers"] == ["ghost"]
    assert [s["verdict"] for s in o["shards"]] == ["OK"] * 4 + ["STUCK", "OK"]
    assert o["reasons"][1].startswith("shard 4: ") and report["healthy"] is False
    detail = cli_json(config, "groups", "--sample", "0s", "--detail")["groups"]
    assert [(d["logical"], d["shard"]) for d in detail] == [
        (s, i) for s in sorted((live, orph)) for i in range(SHARDS)]
    assert [d["pending"] for d in detail if d["logical"] == live] == [
        len(published.get(i, [])) for i in range(SHARDS)]
    one = cli_json(config, "groups", live, "--sample", "0s")["groups"]
    assert [(x["stream"], x["pending"], len(x["shards"])) for x in one] == [(live, 6, SHARDS)]
    status = cli_json(config, "status", "--sample", "0s")
    (daemon,) = status["daemons"]
    assert daemon["consumer"] == "a" and sorted(daemon["streams"]) == sorted(f"{n}/{GROUP}" for n in names)
    assert sorted(x["stream"] for x in status["groups"]) == sorted((live, orph))
    text = cli(config, "status", "--sample", "0s").stdout
    assert f"{live}/{GROUP} (6 shards)" in text
    lines = cli(config, "status", "--sample", "0s", "--detail").stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("STREAM"))
    assert lines[header].split()[:3] == ["STREAM", "SHARD", "GROUP"]
    assert [line.split()[:2] for line in lines[header + 1 : header + 1 + SHARDS]] == [
        [n, str(i)] for i, n in enumerate(names)]


def test_claim_and_ack_find_the_shard_of_each_id(
    cluster: LocalCluster, rc: RedisCluster, tmp_path: Path,  # noqa: F811
) -> None:
    """Entries of a 6-shard stream held by "ghost": two on shard 1, two on shard 3, and the
    id 5-0 in both shard 0 and shard 4. `claim` and `ack` by the logical name.

    Must hold: claim of one id of each shard gives both to alice, in their own shards, with
    their delivery count unchanged; an id pending nowhere fails the whole claim (exit 1); 5-0
    alone is refused (exit 2, naming it and both shards) and nothing changes; with --shard 4
    only shard 4's is claimed; ack of two ids acks each in its shard; ack of 5-0 is refused;
    ack by the shard's own name acks only there."""
    stream = f"op{tmp_path.name[-6:].replace('_', '')}"
    names = shard_names(stream, SHARDS)
    config = admin_config(tmp_path, cluster, [stream_cfg(stream)])
    for name in names:
        rc.xgroup_create(name, GROUP, id="0", mkstream=True)
    # Ids given, all different: ids Redis makes in the same millisecond in two shards are
    # equal, which is the ambiguity 5-0 stands for below.
    one = [rc.xadd(names[1], {"payload": "1"}, id=f"11-{i}").decode() for i in range(2)]
    three = [rc.xadd(names[3], {"payload": "3"}, id=f"13-{i}").decode() for i in range(2)]
    for name in (names[0], names[4]):
        rc.xadd(name, {"payload": "same id"}, id="5-0")
    for name in names:
        rc.xreadgroup(GROUP, "ghost", {name: ">"})

    res = cli_json(config, "claim", stream, one[0], three[0], "--to", "alice")
    assert res["claimed"] == [one[0], three[0]]
    assert [(s["shard"], s["stream"], s["claimed"]) for s in res["shards"]] == [
        (1, names[1], [one[0]]), (3, names[3], [three[0]])]
    assert pending_ids(rc, names[1]) == {one[0]: ("alice", 1), one[1]: ("ghost", 1)}
    assert pending_ids(rc, names[3]) == {three[0]: ("alice", 1), three[1]: ("ghost", 1)}
    missing = cli(config, "claim", stream, one[1], "1-1", "--to", "bob")
    assert missing.returncode == 1 and "1-1" in missing.stderr and "nothing was claimed" in missing.stderr
    assert pending_ids(rc, names[1])[one[1]] == ("ghost", 1)
    ambiguous = cli(config, "claim", stream, "5-0", "--to", "bob")
    assert ambiguous.returncode == 2 and "5-0 (shards 0, 4)" in ambiguous.stderr, ambiguous.stderr
    assert pending_ids(rc, names[0]) == pending_ids(rc, names[4]) == {"5-0": ("ghost", 1)}
    chosen = cli_json(config, "claim", stream, "5-0", "--shard", "4", "--to", "bob")
    assert (chosen["stream"], chosen["claimed"]) == (names[4], ["5-0"])
    assert (pending_ids(rc, names[4]), pending_ids(rc, names[0])) == (
        {"5-0": ("bob", 1)}, {"5-0": ("ghost", 1)})

    acked = cli_json(config, "ack", stream, one[1], three[1], "--yes")
    assert (acked["acked"], acked["not_pending"]) == ([one[1], three[1]], [])
    assert set(pending_ids(rc, names[1])) == {one[0]} and set(pending_ids(rc, names[3])) == {three[0]}
    refused = cli(config, "ack", stream, "5-0", "--yes")
    assert refused.returncode == 2 and "5-0" in refused.stderr
    assert set(pending_ids(rc, names[0])) == set(pending_ids(rc, names[4])) == {"5-0"}
    assert cli(config, "ack", names[0], "5-0", "--yes").returncode == 0
    assert (pending_ids(rc, names[0]), set(pending_ids(rc, names[4]))) == ({}, {"5-0"})


def test_dead_letters_of_every_shard_listed_and_replayed_home(
    cluster: LocalCluster, rc: RedisCluster, server: Server, tmp_path: Path,  # noqa: F811
    spawned: list[DaemonProcess], r: redis.Redis,
) -> None:
    """Daemon "a" rejects every entry of a 6-shard stream (max-deliveries 1): one published
    to shard 0, two to shard 3, one to shard 5. Then `dlq list`, `show`, `replay --all` and
    `purge` by the logical name.

    Must hold: `dlq list` merges the shards' dead-letter streams oldest first (4 entries,
    each naming its shard, its shard's stream and dead-letter stream ``{<shard>}:dead``);
    `show` finds an entry's shard; `replay --all` sends each entry back to its own shard
    (the copy is there, same payload), the daemon rejects the copies again, and `purge`
    empties every shard's dead-letter stream."""
    stream = f"dl{tmp_path.name[-6:].replace('_', '')}"
    names = shard_names(stream, SHARDS)
    dead = [shard_dead_letter(n) for n in names]
    cfgs = [stream_cfg(stream, **{"max-deliveries": 1})]
    fleet = Fleet(server.url, tmp_path, spawned, redis=cluster_table(cluster))
    fleet.start("a", cfgs).wait_ready()
    config = admin_config(tmp_path, cluster, cfgs)
    published = {shard: publish(config, stream, shard, [{"reject": f"why {shard}"}] * n)
                 for shard, n in ((0, 1), (3, 2), (5, 1))}
    origin = {i: shard for shard, ids in published.items() for i in ids}
    wait_for(lambda: [rc.xlen(d) for d in dead] == [1, 0, 0, 2, 0, 1],
             what=lambda: f"dead letters per shard: {[rc.xlen(d) for d in dead]}\n{fleet.logs()}")

    page = cli_json(config, "dlq", "list", stream)
    assert (page["dead_letter"], page["dead_letters"], page["length"]) == (None, dead, 4)
    entries = page["entries"]
    assert [e["dead_id"] for e in entries] == sorted((e["dead_id"] for e in entries), key=id_key)
    assert sorted(e["original_id"] for e in entries) == sorted(origin)
    for e in entries:
        shard = origin[e["original_id"]]
        assert (e["shard"], e["stream"], e["dead_letter"]) == (shard, names[shard], dead[shard])
        assert e["reason"] == f"rejected: why {shard}"
    table = cli(config, "dlq", "list", stream).stdout.splitlines()
    assert table[0].split()[:3] == ["DEAD", "ID", "SHARD"] and len(table) == 1 + 4 + 1
    shown = cli_json(config, "dlq", "show", stream, entries[-1]["dead_id"])
    assert (shown["original_id"], shown["shard"]) == (entries[-1]["original_id"], entries[-1]["shard"])

    replayed = cli_json(config, "dlq", "replay", stream, "--all")
    assert replayed["failed"] == [] and len(replayed["replayed"]) == 4
    by_dead = {e["dead_id"]: e for e in entries}
    for item in replayed["replayed"]:
        shard = by_dead[item["dead_id"]]["shard"]
        assert item["stream"] == names[shard]
        ((_, fields),) = rc.xrange(names[shard], min=item["new_id"], max=item["new_id"])
        assert json.loads(fields[b"payload"]) == {"reject": f"why {shard}"}
    copies = {item["new_id"] for item in replayed["replayed"]}
    wait_for(lambda: {f[b"edged-id"].decode() for d in dead for _, f in rc.xrange(d)} == copies,
             what=lambda: f"the copies rejected again\n{fleet.logs()}")
    purged = cli_json(config, "dlq", "purge", stream, "--yes")
    assert purged["deleted"] == 4 and [rc.xlen(d) for d in dead] == [0] * SHARDS
