"""Sharded logical streams on one server, and the config rules of cluster mode.

The cluster tests (test_cluster.py) show shards spread over primaries; here what does not need
a cluster: the shards of one logical stream share one ``concurrency`` budget, `edged publish`
picks shards from the config or ``--shards``, and configs that could not keep their keys in
one slot are refused before anything runs (exit 78, naming the field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from edged.config import parse_config
from edged.errors import ConfigError
from edged.sharding import shard_for_key, shard_names
from tests.servers import Server
from tests.support import DaemonProcess, Fleet, run_edged, wait_for, write_config

GROUP = "edged"


def handled(r: redis.Redis, stream: str) -> list[str]:
    return [m.decode().split()[0] for m in r.lrange(f"{stream}:handled", 0, -1)]


def test_shards_share_one_concurrency_budget(
    server: Server, r: redis.Redis, tmp_path: Path, spawned: list[DaemonProcess], stream: str,
) -> None:
    """One daemon reads a logical stream of 3 shards with concurrency 3; 30 entries (10 per
    shard) each run 50 ms and count the runs in progress.

    Must hold: every entry is handled, and never more than 3 ran at once over all shards
    (per-shard budgets would let 9 run); 3 did run at once (the bound is used, not serialised
    by accident)."""
    logical = stream.replace(":", "-")
    names = shard_names(logical, 3)
    track = f"{stream}:running"
    fleet = Fleet(server.url, tmp_path, spawned)
    d = fleet.start("a", [{"stream": logical, "handler": "tests.handlers:record", "shards": 3,
                           "concurrency": 3, "start-id": "0"}])
    d.wait_ready()
    body = json.dumps({"track": track, "sleep": 0.05})
    ids = {n: [r.xadd(n, {"payload": body}).decode() for _ in range(10)] for n in names}
    for n in names:
        wait_for(lambda n=n: sorted(handled(r, n)) == sorted(ids[n]),
                 what=lambda n=n: f"{n} handled {len(handled(r, n))}/10\n{d.output()}")
    most = int(r.get(f"{track}:max") or 0)
    assert most == 3, f"at most 3 at once over the shards, and 3 reached: saw {most}"


def test_a_busy_shard_does_not_starve_a_quiet_one(
    server: Server, r: redis.Redis, tmp_path: Path, spawned: list[DaemonProcess], stream: str,
) -> None:
    """Concurrency 2 over 2 shards: 60 entries of 20 ms wait in shard 0; once 5 have started,
    one entry is published to shard 1.

    Must hold: the shard-1 entry starts long before shard 0 drains (an idle shard's reader
    keeps one slot while it waits): at most 15 shard-0 entries start before it. A busy reader
    that could take every slot would run it last."""
    logical = stream.replace(":", "-")
    busy, quiet = shard_names(logical, 2)
    order = f"{stream}:order"
    d = Fleet(server.url, tmp_path, spawned).start(
        "a", [{"stream": logical, "handler": "tests.handlers:record", "shards": 2,
               "concurrency": 2, "start-id": "0"}])
    d.wait_ready()
    body = json.dumps({"order": order, "sleep": 0.02})
    for _ in range(60):
        r.xadd(busy, {"payload": body})
    wait_for(lambda: r.llen(order) >= 5, what=lambda: f"5 started\n{d.output()}")
    r.xadd(quiet, {"payload": body})
    wait_for(lambda: r.llen(order) == 61, 30, what=lambda: f"all 61 started\n{d.output()}")
    started = [s.decode() for s in r.lrange(order, 0, -1)]
    assert started.index(quiet) <= 15, f"the quiet shard's entry started {started.index(quiet)}th"


def test_publish_picks_shards_from_config_or_flag(
    server: Server, r: redis.Redis, tmp_path: Path, stream: str,
) -> None:
    """`edged publish` on a stream configured with shards = 4: with --key all entries go to
    the key's shard in order; without, round-robin over the 4; --shards 2 without a config
    uses 2 shards; --json names each entry's shard.

    Must hold: the stream's own key is never written (everything lands in shards); the key's
    entries are in shard_for_key's shard in publish order; 8 keyless entries are 2 per shard."""
    logical = stream.replace(":", "-")
    cfg = write_config(tmp_path / "p.toml", [{"stream": logical, "handler": "x:y", "shards": 4}])
    names = shard_names(logical, 4)

    def publish(*args: str, input: str | None = None) -> Any:
        res = run_edged("publish", logical, *args, "--url", server.url, input=input)
        assert res.returncode == 0, res.stderr
        return res.stdout

    lines = publish("-", "--key", "user-42", "-c", str(cfg),
                    input="".join(f'{{"n": {i}}}\n' for i in range(5))).splitlines()
    shard = names[shard_for_key("user-42", 4)]
    assert {line.split()[0] for line in lines} == {shard}
    assert [e.decode() for e, _ in r.xrange(shard)] == [line.split()[1] for line in lines]
    spread = publish("-", "-c", str(cfg), input='{"n": 0}\n' * 8).splitlines()
    assert sorted(line.split()[0] for line in spread) == sorted(names * 2)
    assert r.exists(logical) == 0
    out = json.loads(publish('{"x": 1}', "--shards", "2", "--key", "k", "--json"))
    assert out["shards"] == [shard_names(logical, 2)[shard_for_key("k", 2)]]
    assert r.xrange(out["shards"][0])[-1][0].decode() == out["ids"][0]


def cluster_config(**streams: Any) -> dict[str, Any]:
    stream = {"stream": "orders", "handler": "x:y", **streams}
    return {"redis": {"cluster": {"nodes": ["127.0.0.1:7000"]}}, "streams": [stream]}


@pytest.mark.parametrize(("doc", "where", "words"), [
    ({"redis": {"url": "redis://h:1/0", "cluster": {"nodes": ["h:1"]}}}, "$.redis",
     "only one of url, [redis.sentinel] and [redis.cluster]"),
    ({"redis": {"cluster": {"nodes": ["h:1"]}, "db": 2}}, "$.redis.db", "only database 0"),
    ({"redis": {"cluster": {"nodes": ["nohost"]}}}, "$.redis.cluster.nodes[0]", "host:port"),
    ({"redis": {"cluster": {"nodes": []}}}, "$.redis.cluster.nodes", "length"),
    (cluster_config(**{"dead-letter": "orders-dead"}), "$.streams[0].dead-letter",
     "must share one"),
    (cluster_config(shards=3, **{"dead-letter": "{orders}:dead"}), "$.streams[0].dead-letter",
     "each shard has its own"),
    (cluster_config(stream="a{b"), "$.streams[0].dead-letter", "no usable hash tag"),
    ({"streams": [{"stream": "a{x}b", "handler": "x:y", "shards": 2}]}, "$.streams[0].shards",
     "brace"),
    ({"streams": [{"stream": "a", "handler": "x:y", "shards": 1025}]}, "$.streams[0].shards",
     "1024"),
    ({"streams": [{"stream": "a", "handler": "x:y", "shards": 8, "concurrency": 4}]},
     "$.streams[0].concurrency", "below shards"),
    ({**cluster_config(), "daemon": {"key-prefix": "x{}:"}}, "$.daemon.key-prefix", "hash tag"),
])
def test_configs_that_would_cross_slots_are_refused(doc: dict[str, Any], where: str,
                                                     words: str) -> None:
    """Each config names what is wrong and where, before anything connects (exit 78 is what
    ConfigError means to `edged start`)."""
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "t.toml")
    assert f"at `{where}`" in str(info.value) and words in str(info.value), str(info.value)


def test_cluster_names_keep_the_stream_slot_and_single_server_names_stay() -> None:
    """On a cluster the default dead-letter stream shares the stream's slot; a stream with its
    own hash tag keeps ``<stream>:dead``; one server keeps ``<stream>:dead`` (no move on
    upgrade); an explicit dead-letter in the stream's slot is accepted."""
    from edged.layout import expand, key_prefix, physical_streams
    from edged.sharding import key_slot

    on_cluster = parse_config(cluster_config())
    [p] = physical_streams(on_cluster)
    assert p.cfg.dead_letter_stream == "{orders}:dead"
    assert key_slot(p.cfg.dead_letter_stream) == key_slot("orders")
    assert key_prefix(on_cluster) == "{edged}:"
    tagged = parse_config(cluster_config(stream="{o}x"))
    assert physical_streams(tagged)[0].cfg.dead_letter_stream == "{o}x:dead"
    explicit = parse_config(cluster_config(**{"dead-letter": "{orders}:poison"}))
    assert physical_streams(explicit)[0].cfg.dead_letter_stream == "{orders}:poison"
    single = parse_config({"streams": [{"stream": "orders", "handler": "x:y"}]})
    assert physical_streams(single)[0].cfg.dead_letter_stream == "orders:dead"
    assert key_prefix(single) == "edged:"
    sharded = expand(parse_config(cluster_config(shards=3)).streams[0], cluster=True)
    assert [s.cfg.dead_letter_stream for s in sharded] == [
        "{" + n + "}:dead" for n in shard_names("orders", 3)]
    assert all(s.cfg.shards == 1 and s.logical == "orders" for s in sharded)


def test_readme_vectors_are_what_the_functions_give() -> None:
    """The test vectors README gives producers in other languages are computed, not typed:
    every key row (CRC-32, shard of 6) and every name row (name, slot) matches sharding.py."""
    import re
    import zlib

    from edged.sharding import key_slot

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]*)` \| (\d+) \| (\d) \| \| (\d) \| `([^`]+)` \| (\d+) \|$|"
                      r"^\| \| \| \| \| (\d) \| `([^`]+)` \| (\d+) \|$", readme, re.M)
    keys = [(k.replace('""', ""), int(c), int(s)) for k, c, s, *_ in rows if c]
    names = [(int(i or j), n or m, int(sl or sm)) for _, _, _, i, n, sl, j, m, sm in rows]
    assert len(keys) == 4 and len(names) == 6, rows
    for key, crc, shard in keys:
        assert (zlib.crc32(key.encode()), shard_for_key(key, 6)) == (crc, shard), key
    expected = shard_names("telemetry", 6)
    for i, name, slot in names:
        assert (expected[i], key_slot(name)) == (name, slot)
