"""Group management (README "Operating edged", issue "The operator's day" finding 8): create a
group at an id, move its last-delivered id (--to-id, --to-time, --to-end) with --dry-run and
--yes, delete it, delete a consumer; nothing is moved or deleted under a live daemon without
--force, and a consumer's pending entries are handed back, not dropped."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from tests.servers import Server
from tests.support import DaemonProcess, Fleet, run_edged, wait_for


def _group(r: redis.Redis, stream: str, name: str) -> dict | None:  # type: ignore[type-arg]
    return next((g for g in r.xinfo_groups(stream) if g["name"].decode() == name), None)


def test_create_move_and_delete_a_group(server: Server, r: redis.Redis, stream: str) -> None:
    url = ["--url", server.url]
    ids = [r.xadd(stream, {"payload": b"{}"}).decode() for _ in range(10)]
    out = run_edged("group", "create", stream, "audit", "--id", "0", *url)
    assert out.returncode == 0 and "created at 0" in out.stdout, out.stderr
    assert _group(r, stream, "audit")["last-delivered-id"] == b"0-0"
    out = run_edged("group", "create", stream, "audit", *url)
    assert out.returncode == 1 and "already has a group audit" in out.stderr

    r.xreadgroup("audit", "c1", {stream: ">"})  # all 10 delivered (and pending)
    out = run_edged("group", "set-id", stream, "audit", "--to-id", ids[4], *url)
    assert out.returncode == 2 and "--dry-run" in out.stderr  # neither --dry-run nor --yes
    out = run_edged("group", "set-id", stream, "audit", "--to-id", ids[4], "--dry-run",
                    "--json", *url)
    change = json.loads(out.stdout)[0]
    assert (change["done"], change["delivered_again"], change["skipped"], change["pending"]) == (
        False, 5, 0, 10), change
    assert _group(r, stream, "audit")["last-delivered-id"].decode() == ids[9], "dry run moved it"
    out = run_edged("group", "set-id", stream, "audit", "--to-id", ids[4], "--yes", *url)
    assert out.returncode == 0 and "5 entries delivered again" in out.stdout, out.stdout
    assert _group(r, stream, "audit")["last-delivered-id"].decode() == ids[4]
    assert _group(r, stream, "audit")["pending"] == 10, "pending entries stay pending"

    out = run_edged("group", "set-id", stream, "audit", "--to-end", "--yes", "--json", *url)
    assert json.loads(out.stdout)[0]["skipped"] == 5
    assert _group(r, stream, "audit")["last-delivered-id"].decode() == ids[9]
    out = run_edged("group", "set-id", stream, "audit", "--to-time", "1h", "--yes", "--json", *url)
    assert json.loads(out.stdout)[0]["delivered_again"] == 10  # all were published just now
    out = run_edged("group", "set-id", stream, "audit", "--to-time", "2026-01-01T00:00:00",
                    "--yes", *url)
    assert out.returncode == 2 and "time zone" in out.stderr

    out = run_edged("group", "delete", stream, "audit", "--dry-run", *url)
    assert "would be deleted; its 10 pending entries go with it" in out.stdout, out.stdout
    assert _group(r, stream, "audit") is not None
    out = run_edged("group", "delete", stream, "audit", "--yes", *url)
    assert out.returncode == 0 and _group(r, stream, "audit") is None


def test_nothing_moves_under_a_live_daemon_and_a_deleted_consumer_hands_its_entries_back(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    url = ["--url", server.url]
    r.xgroup_create(stream, "edged", id="0", mkstream=True)
    held = [r.xadd(stream, {"payload": b"{}"}).decode() for _ in range(3)]
    r.xreadgroup("edged", "old-host", {stream: ">"})  # pending with a consumer that is gone
    out = run_edged("consumer", "delete", stream, "old-host", *url)
    assert out.returncode == 1 and "owns 3 pending entries" in out.stderr, out.stderr

    fleet = Fleet(server.url, tmp_path, spawned)
    d = fleet.start("live", [{"stream": stream, "handler": "tests.handlers:record",
                              "claim-idle": "30m", "claim-interval": "200ms"}])
    d.wait_ready()
    for argv in (["group", "set-id", stream, "edged", "--to-end", "--yes"],
                 ["group", "delete", stream, "edged", "--yes"],
                 ["consumer", "delete", stream, "live"]):
        out = run_edged(*argv, *url)
        assert out.returncode == 1 and "live" in out.stderr, (argv, out.stderr)
    assert _group(r, stream, "edged") is not None

    # --force hands old-host's entries back: claimed as idle for a day, so the live daemon
    # (claim-idle 30 minutes) reclaims and handles them at once, then the consumer is gone.
    out = run_edged("consumer", "delete", stream, "old-host", "--force", *url)
    assert out.returncode == 0 and "3 pending entries handed back" in out.stdout, out.stderr
    names = [c["name"].decode() for c in r.xinfo_consumers(stream, "edged")]
    assert "old-host" not in names
    wait_for(lambda: {m.decode().split()[0] for m in r.lrange(f"{stream}:handled", 0, -1)}
             >= set(held), 20, what="the handed-back entries handled by the live daemon")
