"""`--all` (issue "The operator's day", finding 7): `edged status` said healthy while a stream
no live daemon and no config named had orphaned entries; with --all every stream that has a
consumer group is looked at."""

from __future__ import annotations

import json
import re
from pathlib import Path

import redis

from tests.servers import Server
from tests.support import run_edged, write_config


def test_status_and_groups_all_find_a_group_nobody_names(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path) -> None:
    forgotten = f"{stream}:forgotten"
    r.xgroup_create(forgotten, "edged", id="0", mkstream=True)
    r.xadd(forgotten, {"payload": b"{}"})
    r.xreadgroup("edged", "long-gone-host", {forgotten: ">"})  # pending, owner has no heartbeat
    named = f"{stream}:named"
    r.xgroup_create(named, "edged", id="$", mkstream=True)
    cfg = write_config(tmp_path / "c.toml", [{"stream": named, "handler": "edged.handlers:log"}])
    base = ["-c", str(cfg), "--url", server.url, "--sample", "0s", "--check"]

    out = run_edged("status", *base)
    assert forgotten not in out.stdout, "without --all only the named streams are looked at"
    out = run_edged("status", *base, "--all")
    assert out.returncode == 1, out.stdout + out.stderr
    assert forgotten in out.stdout and "ORPHANED" in out.stdout and "UNHEALTHY" in out.stdout
    out = run_edged("groups", *base, "--all", "--json")
    report = json.loads(out.stdout)
    rows = {g["stream"]: g for g in report["groups"]}
    assert rows[forgotten]["verdict"] == "ORPHANED" and rows[named]["verdict"] == "OK"
    # --all also says what each stream holds: length, first and last id, memory.
    info = {s["stream"]: s for s in report["streams"]}[forgotten]
    first = r.xrange(forgotten)[0][0].decode()
    assert (info["length"], info["first_id"], info["last_id"]) == (1, first, first)
    assert info["memory_bytes"] > 0
    out = run_edged("groups", *base, "--all")
    streams_table = re.split(r"^STREAM +LENGTH.*$", out.stdout, flags=re.M)[1]
    line = next(x for x in streams_table.splitlines() if x.startswith(forgotten))
    assert line.split()[1] == "1" and first in line, line
    out = run_edged("groups", named, "--all", "--url", server.url)
    assert out.returncode == 2 and "not both" in out.stderr
