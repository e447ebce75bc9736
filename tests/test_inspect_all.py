"""`--all` (issue "The operator's day", finding 7): `edged status` said healthy while a stream
no live daemon and no config named had orphaned entries; with --all every stream that has a
consumer group is looked at."""

from __future__ import annotations

import json
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
    rows = {g["stream"]: g for g in json.loads(out.stdout)["groups"]}
    assert rows[forgotten]["verdict"] == "ORPHANED" and rows[named]["verdict"] == "OK"
    out = run_edged("groups", named, "--all", "--url", server.url)
    assert out.returncode == 2 and "not both" in out.stderr
