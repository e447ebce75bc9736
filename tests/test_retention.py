"""Safe retention: trimming by age and length never takes an entry a consumer group still needs.

Entries past retention are written with explicit old ids (their ms part two minutes ago, or
1970) against a retention of 1m. The rule itself (lua/trim.lua) is checked by a property test
against the real script on the real server; the daemon's lease loop, the log line, the metrics,
`edged groups` and `edged trim` end to end.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.ids import id_key
from edged.lua import source
from tests.servers import Server, free_port
from tests.support import DaemonProcess, Fleet, run_edged, wait_for, write_config

HANDLER = "tests.handlers:record"


def server_ms(r: redis.Redis) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def add_old(r: redis.Redis, stream: str, n: int, age_ms: int = 120_000) -> list[str]:
    """``n`` entries whose ids say they were added ``age_ms`` ago (past a 1m retention)."""
    base = server_ms(r) - age_ms
    return [r.xadd(stream, {"payload": "{}"}, id=f"{base + i}-0").decode() for i in range(n)]


def ids_of(r: redis.Redis, stream: str) -> list[str]:
    return [i.decode() for i, _ in r.xrange(stream)]


def metric(url: str, name: str, **labels: str) -> float | None:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return None


def test_slow_group_keeps_what_it_needs_while_the_rest_and_dead_letters_are_trimmed(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    old = add_old(r, stream, 10)
    dead = f"{stream}:dead"
    old_dead = add_old(r, dead, 5)
    new_dead = [r.xadd(dead, {"x": "1"}).decode() for _ in range(5)]
    r.xgroup_create(stream, "slow", id="0")
    r.xreadgroup("slow", "s1", {stream: ">"}, count=5)  # old[0..4] pending in slow
    r.xack(stream, "slow", old[0], old[1])               # slow still needs old[2:]
    port = free_port()
    fleet = Fleet(server.url, tmp_path, spawned)
    d = fleet.start("trimmer", [{
        "stream": stream, "handler": HANDLER, "start-id": "0", "retention": "1m",
        "trim-interval": "200ms", "dead-letter-retention": "1m", "dead-letter-max-len": 3,
    }], listen=f"127.0.0.1:{port}")
    d.wait_ready()
    wait_for(lambda: r.llen(f"{stream}:handled") == 10 and r.xpending(stream, "edged")["pending"] == 0,
             what="the fast group done with every entry")
    wait_for(lambda: ids_of(r, stream)[:1] == [old[2]], what=lambda: f"old[0..1] trimmed, "
             f"left: {ids_of(r, stream)}\n{fleet.logs()}")
    assert ids_of(r, stream) == old[2:]  # pending in slow, or not read by it: all kept
    d.wait_output("retention blocked by group slow")
    url = f"http://127.0.0.1:{port}/metrics"
    past = metric(url, "edged_stream_retention_blocked_seconds", stream=stream, group="slow")
    assert past is not None and 30 < past < 600, past
    assert metric(url, "edged_stream_retention_blocked_seconds", stream=stream, group="edged") == 0
    assert (metric(url, "edged_stream_trimmed_total", stream=stream) or 0) >= 2
    # The dead-letter stream has no group: plain retention and max-len.
    wait_for(lambda: ids_of(r, dead) == new_dead[-3:], what=lambda: f"dead letters trimmed to "
             f"the newest 3: {ids_of(r, dead)} (old {old_dead})")
    # The slow group catches up: nothing holds the old entries any more.
    r.xreadgroup("slow", "s1", {stream: ">"})
    r.xack(stream, "slow", *old)
    wait_for(lambda: r.xlen(stream) == 0, what=lambda: f"every old entry trimmed\n{fleet.logs()}")
    d.wait_output("retention no longer blocked")
    assert metric(url, "edged_stream_retention_blocked_seconds", stream=stream, group="slow") == 0


def test_stopped_group_blocks_trimming_groups_says_so_and_trim_cli(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path) -> None:
    old = add_old(r, stream, 10)
    r.xgroup_create(stream, "edged", id="0")
    r.xreadgroup("edged", "c", {stream: ">"})
    r.xack(stream, "edged", *old)
    r.xgroup_create(stream, "stopped", id="0")  # never reads: it needs everything
    cfg = write_config(tmp_path / "edged.toml", [
        {"stream": stream, "handler": HANDLER, "retention": "1m", "max-len": 100}])
    base = ("-c", str(cfg), "--url", server.url)

    out = run_edged("groups", stream, "--sample", "0s", "--json", *base)
    assert out.returncode == 0, out.stderr
    rows = {g["group"]: g for g in json.loads(out.stdout)["groups"]}
    assert "RETENTION-BLOCKED" in rows["stopped"]["verdicts"], rows["stopped"]
    assert rows["edged"]["verdicts"] == ["OK"], rows["edged"]

    refused = run_edged("trim", stream, *base)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    unknown = run_edged("trim", "not-configured", "--dry-run", *base)
    assert unknown.returncode == 2, unknown.stderr

    dry = run_edged("trim", stream, "--dry-run", *base)
    assert dry.returncode == 0, dry.stderr
    assert "would trim nothing of 10 entries" in dry.stdout and "group stopped" in dry.stdout
    assert "RETENTION-BLOCKED" in dry.stdout
    assert r.xlen(stream) == 10

    r.xreadgroup("stopped", "c", {stream: ">"}, count=4)
    r.xack(stream, "stopped", old[0], old[1])  # old[2], old[3] pending: the floor is old[2]
    dry = run_edged("trim", stream, "--dry-run", "--json", *base)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    (res,) = report["streams"]
    assert (report["dry_run"], report["trimmed"]) == (True, 2)
    assert (res["first_id"], res["last_id"], res["floor"], res["holder"], res["blocked"]) == (
        old[0], old[1], old[2], "stopped", True)
    assert r.xlen(stream) == 10

    done = run_edged("trim", stream, "--yes", *base)
    assert done.returncode == 0, done.stderr
    assert f"trimmed 2 of 10 entries, {old[0]} .. {old[1]}" in done.stdout
    assert ids_of(r, stream) == old[2:]


# --------------------------------------------------------------------------- the rule itself

RETENTION_MS = 60_000


@st.composite
def stream_states(draw: st.DrawFn) -> dict[str, Any]:
    n_old = draw(st.integers(0, 12))
    n_new = draw(st.integers(0, 6))
    n = n_old + n_new
    groups = []
    for _ in range(draw(st.integers(0, 4))):
        start = draw(st.integers(-1, n - 1))  # -1: created at 0
        read = draw(st.integers(0, n))
        acked = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        groups.append((start, read, acked))
    max_len = draw(st.one_of(st.just(0), st.integers(1, max(n, 1))))
    walk_limit = draw(st.one_of(st.just(100_000), st.integers(1, 20)))
    return {"n_old": n_old, "n_new": n_new, "groups": groups, "max_len": max_len,
            "walk_limit": walk_limit}


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=stream_states())
def test_the_script_never_trims_what_a_group_needs(r: redis.Redis, state: dict[str, Any]) -> None:
    key = f"t:prop:{uuid.uuid4().hex[:10]}"
    future = server_ms(r) + 10_000_000  # never past retention
    ids = [f"{1000 + i}-{i % 3}" for i in range(state["n_old"])]
    ids += [f"{future + i}-0" for i in range(state["n_new"])]
    for entry_id in ids:
        r.xadd(key, {"f": "v"}, id=entry_id)
    needed: set[str] = set()
    floors: list[tuple[int, int]] = []
    for g, (start, read, acked) in enumerate(state["groups"]):
        name = f"g{g}"
        r.xgroup_create(key, name, id=ids[start] if start >= 0 else "0", mkstream=True)
        got = [i.decode() for _, rows in r.xreadgroup(name, "c", {key: ">"}, count=read or 1)
               for i, _ in rows] if read else []
        done = [i for i in got if acked[ids.index(i)]]
        if done:
            r.xack(key, name, *done)
        last = got[-1] if got else (ids[start] if start >= 0 else None)
        unread = ids[ids.index(last) + 1:] if last is not None else list(ids)
        pending = [i for i in got if i not in done]
        needed |= set(unread) | set(pending)
        if unread or pending:
            floors.append(min(id_key(i) for i in [*unread[:1], *pending]))
    n, max_len, limit = len(ids), state["max_len"], state["walk_limit"]
    # max-len's cut: exact when max-len is within the walk limit, else at most `limit` per call
    by_len = max(n - max_len, 0) if max_len else 0
    if max_len > limit:
        by_len = min(by_len, limit)
    wanted = {i for k, i in enumerate(ids) if k < state["n_old"] or k < by_len}
    if not state["groups"]:
        floor: tuple[int, int] | None = id_key(ids[0]) if ids else None  # no group: held whole
    else:
        floor = min(floors) if floors else None
    expect_gone = {i for i in wanted if floor is None or id_key(i) < floor}

    reply = r.eval(source("trim"), 1, key, RETENTION_MS, max_len, "trim", "hold", limit)
    left = set(ids_of(r, key))
    assert needed <= left, f"trimmed entries a group needs: {sorted(needed - left)}"
    assert left == set(ids) - expect_gone
    assert reply[0] == len(expect_gone)
    assert bool(reply[6]) == bool(wanted - expect_gone)
    r.delete(key)
