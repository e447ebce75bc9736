"""`edged pending|groups|consumers|status|claim|ack` (README "Operating edged"; library: admin/verdicts.py).

The situations are real: a live `edged start` daemon consuming one stream, and consumer groups
put into each unhealthy state by hand with a plain client (a "ghost" consumer that read and
never acked, a backlog nobody reads, entries held by a consumer whose daemon looks alive but
never reclaims). The commands run as an operator runs them and their `--json` output is checked
against what Redis itself says.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from edged import __version__
from edged.admin import verdicts as ins
from edged.config import RedisConfig
from edged.connect.client import make_client
from tests.servers import Server
from tests.support import DaemonProcess, run_edged, wait_for, write_config
from tests.support import test_env as edged_env

GROUP = "edged"
DOWN = "redis://127.0.0.1:1/0"


@dataclass
class Fleet:
    """The situation every test of this module inspects (read-only)."""

    server: Server
    prefix: str
    config: Path
    """Lists the four streams and the prefix; the daemon has its own config (only `ok`)."""
    daemon: DaemonProcess
    ok: str
    """Read by the live daemon `live-1`: all handled, one entry dead-lettered."""
    orphan: str
    """3 entries read by `ghost` (no heartbeat record), never acked."""
    stalled: str
    """5 entries, a group created at 0, no consumer."""
    stuck: str
    """2 entries read by `frozen`, whose (hand-written) heartbeat record says it is alive; the
    config gives this stream claim-idle 300ms + claim-interval 100ms."""

    def edged(self, *args: str, config: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["-c", str(self.config)] if config else []
        return run_edged(*args, *extra, "--url", self.server.url)

    def json(self, *args: str) -> Any:
        res = self.edged(*args, "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)


def frozen_record(prefix: str, stream: str) -> dict[str, str]:
    now = time.time()
    return {
        "consumer": "frozen", "host": "edge-sim", "pid": "4242", "version": __version__,
        "streams": json.dumps([f"{stream}/{GROUP}"]), "started": f"{now - 60:.3f}",
        "beat": f"{now:.3f}", "ready": "1", "in-flight": "2", "processed": "0", "failed": "0",
        "dead-lettered": "0", "instance": "simulated",
    }


@pytest.fixture(scope="module")
def fleet(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("inspect")
    tag = uuid.uuid4().hex[:8]
    prefix = f"ti{tag}:"
    ok, orphan, stalled, stuck = (f"ti:{tag}:{name}" for name in ("ok", "orphan", "stalled", "stuck"))
    daemon_section = {"consumer": "live-1", "heartbeat-interval": "200ms", "key-prefix": prefix}
    ok_cfg = {"stream": ok, "handler": "tests.handlers:record", "start-id": "0",
              "claim-idle": "2s", "claim-interval": "200ms", "max-deliveries": 1}
    daemon_config = write_config(tmp / "daemon.toml", [ok_cfg], daemon=daemon_section)
    config = write_config(tmp / "inspect.toml", [
        ok_cfg,
        {"stream": orphan, "handler": "tests.handlers:record"},
        {"stream": stalled, "handler": "tests.handlers:record"},
        {"stream": stuck, "handler": "tests.handlers:record", "claim-idle": "300ms",
         "claim-interval": "100ms"},
    ], daemon=daemon_section)
    r = server.client()
    for i in range(3):
        r.xadd(ok, {"payload": json.dumps({"n": i})})
    r.xadd(ok, {"payload": json.dumps({"reject": "poison"})})
    daemon = DaemonProcess(daemon_config, server.url, tmp / "daemon.log",
                           env=edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER="live-1"))
    try:
        for stream, n in ((orphan, 3), (stalled, 5), (stuck, 2)):
            for i in range(n):
                r.xadd(stream, {"payload": json.dumps({"n": i})})
            r.xgroup_create(stream, GROUP, id="0")
        r.xreadgroup(GROUP, "ghost", {orphan: ">"}, count=10)
        r.xreadgroup(GROUP, "frozen", {stuck: ">"}, count=10)
        r.hset(f"{prefix}daemon:frozen", mapping=frozen_record(prefix, stuck))
        r.pexpire(f"{prefix}daemon:frozen", 300_000)
        daemon.wait_ready()
        wait_for(lambda: r.llen(f"{ok}:handled") == 3 and r.xlen(f"{ok}:dead") == 1
                 and int(r.xpending(ok, GROUP)["pending"]) == 0, what="ok stream drained")
        wait_for(lambda: len(r.xpending_range(stuck, GROUP, "-", "+", 10, idle=600)) == 2,
                 what="stuck entries idle past claim-idle + claim-interval")
        yield Fleet(server, prefix, config, daemon, ok, orphan, stalled, stuck)
    finally:
        daemon.stop()
        r.delete(f"{prefix}daemon:frozen")
        r.close()


def by_stream(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {g["stream"]: g for g in groups if g["group"] == GROUP}


def redis_group(r: redis.Redis, stream: str) -> dict[str, Any]:
    (info,) = [g for g in r.xinfo_groups(stream) if g["name"] == GROUP.encode()]
    return info


# --------------------------------------------------------------------------- groups


def test_groups_gives_each_situation_its_verdict(fleet: Fleet, r: redis.Redis) -> None:
    """`edged groups --json` without a stream, after the fixture built the four situations.

    Must hold: exactly the streams of the live daemon and of the config are listed; counts,
    last-delivered id, entries-read and lag are what XINFO GROUPS says; the dead-letter count is
    the XLEN of `<stream>:dead`; verdicts: the daemon's stream OK, the ghost's ORPHANED (naming
    ghost and its 3 entries), the unread backlog STALLED (the default 1s sample was taken), the
    entries held by the "live" but silent consumer STUCK and not ORPHANED; healthy is false."""
    report = fleet.json("groups")
    groups = by_stream(report["groups"])
    assert set(groups) == {fleet.ok, fleet.orphan, fleet.stalled, fleet.stuck}
    for stream, g in groups.items():
        info = redis_group(r, stream)
        assert g["consumers"] == info["consumers"]
        assert g["pending"] == info["pending"]
        assert g["last_delivered_id"] == info["last-delivered-id"].decode()
        assert g["entries_read"] == info["entries-read"]
        assert g["lag"] == info["lag"] and g["lag_source"] == "redis"
        assert g["dead_letter"] == f"{stream}:dead"
        assert g["dead_letters"] == r.xlen(f"{stream}:dead")
        assert g["sampled_seconds"] is not None and g["sampled_seconds"] >= 0.9
    assert groups[fleet.ok]["verdicts"] == ["OK"] and groups[fleet.ok]["dead_letters"] == 1
    assert groups[fleet.orphan]["verdicts"] == ["ORPHANED"]
    assert groups[fleet.orphan]["orphaned_consumers"] == ["ghost"]
    assert groups[fleet.orphan]["orphaned_pending"] == 3
    assert groups[fleet.stalled]["verdicts"] == ["STALLED"] and groups[fleet.stalled]["lag"] == 5
    assert groups[fleet.stuck]["verdicts"] == ["STUCK"]
    assert groups[fleet.stuck]["stuck_pending"] == 2
    assert groups[fleet.stuck]["stuck_after_seconds"] == pytest.approx(0.4)
    assert groups[fleet.stuck]["oldest_pending_age_seconds"] > 0.4
    assert report["healthy"] is False


def test_groups_check_exit_codes_and_table(fleet: Fleet) -> None:
    """`edged groups STREAM --check` on the healthy stream and on each unhealthy one, and the
    plain table. Must hold: exit 0 for the OK stream, 1 for every other; the table names the
    verdict and the reason, one row per line."""
    assert fleet.edged("groups", fleet.ok, "--check", "--sample", "0s").returncode == 0
    for stream in (fleet.orphan, fleet.stuck):
        assert fleet.edged("groups", stream, "--check", "--sample", "0s").returncode == 1
    res = fleet.edged("groups", fleet.stalled, "--check")
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["STREAM", "GROUP", "CONSUMERS"]
    assert lines[1].split()[0] == fleet.stalled and lines[1].split()[-1] == "STALLED"
    assert any("STALLED: lag 5 and nothing delivered" in line for line in lines)


def test_groups_without_streams_scans_the_server(fleet: Fleet, r: redis.Redis, tmp_path: Path) -> None:
    """A config with no streams and a prefix no daemon uses: `edged groups` falls back to
    SCAN TYPE stream. Must hold: a stream made just now with a group is listed; with a single
    sample (`--sample 0s`) no history verdict is given and sampled_seconds is null."""
    stream = f"ti:scan:{uuid.uuid4().hex[:8]}"
    r.xadd(stream, {"payload": "1"})
    r.xgroup_create(stream, "g2", id="$")
    config = write_config(tmp_path / "empty.toml", [], daemon={"key-prefix": f"ti{uuid.uuid4().hex}:"})
    res = run_edged("groups", "-c", str(config), "--url", fleet.server.url, "--sample", "0s", "--json")
    assert res.returncode == 0, res.stderr
    (g,) = [g for g in json.loads(res.stdout)["groups"] if g["stream"] == stream]
    assert g["group"] == "g2" and g["lag"] == 0 and g["verdict"] == "OK"
    assert g["sampled_seconds"] is None and g["lag_change"] is None


def test_behind_and_stalled_come_from_two_real_samples(server: Server, r: redis.Redis, stream: str) -> None:
    """Samples of a real group compared by verdicts.judge: a backlog of 5, then 2 entries
    added while 1 is delivered, then nothing; then an undelivered entry deleted.

    Must hold: first pair BEHIND (lag 5 → 6, something was delivered, so not STALLED); second
    pair STALLED (lag 6, nothing moved); after the XDEL Redis reports no lag and edged counts
    the entries after the last-delivered id itself (lag_source "counted")."""
    for i in range(5):
        r.xadd(stream, {"payload": str(i)})
    r.xgroup_create(stream, GROUP, id="0")

    async def go() -> tuple[list[ins.GroupSample], ins.GroupSample]:
        client = make_client(RedisConfig(), url=server.url)
        try:
            samples = [(await ins.sample_groups(client, [stream]))[0]]
            r.xadd(stream, {"payload": "5"})
            r.xadd(stream, {"payload": "6"})
            r.xreadgroup(GROUP, "reader", {stream: ">"}, count=1)
            samples.append((await ins.sample_groups(client, [stream]))[0])
            samples.append((await ins.sample_groups(client, [stream]))[0])
            last_id = r.xrevrange(stream, count=1)[0][0]
            r.xdel(stream, last_id)
            return samples, (await ins.sample_groups(client, [stream]))[0]
        finally:
            await client.aclose()

    (first, second, third), after_delete = anyio.run(go)
    assert (first.lag, second.lag, third.lag) == (5, 6, 6)
    assert ins.judge(first, second, stuck=0, orphaned=[])[0] == ["BEHIND"]
    verdicts, reasons = ins.judge(second, third, stuck=0, orphaned=[])
    assert verdicts == ["STALLED"] and "lag 6" in reasons[0]
    assert ins.judge(None, third, stuck=0, orphaned=[])[0] == ["OK"]  # one sample: no history
    expected = len(r.xrange(stream, min=f"({after_delete.last_delivered_id}"))
    assert after_delete.lag_source in ("counted", "redis") and after_delete.lag == expected
    if redis_group(r, stream)["lag"] is None:
        assert after_delete.lag_source == "counted"


# --------------------------------------------------------------------------- pending


def test_pending_summary_matches_xpending(fleet: Fleet, r: redis.Redis) -> None:
    """`edged pending STREAM --json` for the ghost's and the frozen consumer's groups.

    Must hold: total, lowest and highest id are XPENDING's; per consumer the count, liveness
    (ghost dead, frozen alive with the host from its record) and XINFO's idle time."""
    for stream, owner, alive, host in ((fleet.orphan, "ghost", False, None),
                                       (fleet.stuck, "frozen", True, "edge-sim")):
        summary = fleet.json("pending", stream)
        expected = r.xpending(stream, GROUP)
        assert summary["pending"] == expected["pending"]
        assert summary["lowest_id"] == expected["min"].decode()
        assert summary["highest_id"] == expected["max"].decode()
        assert summary["oldest_age_seconds"] >= 0
        (c,) = summary["consumers"]
        assert (c["consumer"], c["alive"], c["host"]) == (owner, alive, host)
        assert c["pending"] == expected["pending"]
        assert c["idle_seconds"] > 0.4
    assert fleet.json("pending", fleet.ok)["pending"] == 0


def test_pending_detail_filters_and_pages(server: Server, r: redis.Redis, stream: str, fleet: Fleet) -> None:
    """Four entries: ghost reads two, ghost2 two, then ghost re-reads its history once (the
    first entry's delivery count becomes 2). `edged pending --detail` with each filter.

    Must hold: pages of 3 then 1 join up through next_after to XPENDING's ids; --consumer,
    --min-deliveries and --idle select what XPENDING says they should; each entry's age is
    from its id; --idle needs --detail (exit 2)."""
    ids = [r.xadd(stream, {"payload": str(i)}).decode() for i in range(4)]
    r.xgroup_create(stream, GROUP, id="0")
    r.xreadgroup(GROUP, "ghost", {stream: ">"}, count=2)
    r.xreadgroup(GROUP, "ghost2", {stream: ">"}, count=2)
    r.xreadgroup(GROUP, "ghost", {stream: "0"}, count=1)

    def detail(*args: str) -> dict[str, Any]:
        res = run_edged("pending", stream, "--detail", "--url", server.url, "--json", *args)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    first = detail("--count", "3")
    assert [e["id"] for e in first["entries"]] == ids[:3] and first["next_after"] == ids[2]
    second = detail("--count", "3", "--after", first["next_after"])
    assert [e["id"] for e in second["entries"]] == ids[3:] and second["next_after"] is None
    rows = {row["message_id"].decode(): row for row in r.xpending_range(stream, GROUP, "-", "+", 10)}
    for e in first["entries"] + second["entries"]:
        assert e["consumer"] == rows[e["id"]]["consumer"].decode()
        assert e["deliveries"] == rows[e["id"]]["times_delivered"]
        assert e["age_seconds"] == pytest.approx(time.time() - int(e["id"].split("-")[0]) / 1000, abs=5)
    assert [e["id"] for e in detail("--consumer", "ghost2")["entries"]] == ids[2:]
    assert [(e["id"], e["deliveries"]) for e in detail("--min-deliveries", "2")["entries"]] == [(ids[0], 2)]
    assert detail("--idle", "1h")["entries"] == []
    stuck = run_edged("pending", fleet.stuck, "--detail", "--idle", "300ms", "--url", server.url, "--json")
    assert len(json.loads(stuck.stdout)["entries"]) == 2
    assert run_edged("pending", stream, "--idle", "1s", "--url", server.url).returncode == 2


# --------------------------------------------------------------------------- consumers, status


def test_consumers_liveness_host_pid(fleet: Fleet, r: redis.Redis) -> None:
    """`edged consumers STREAM --json` for the live daemon's group and the ghost's.

    Must hold: live-1 is alive with this host's name and the daemon's pid and was seen lately;
    ghost is not alive and has no host; pending and idle are XINFO CONSUMERS'; inactive is
    given exactly where the server reports it (Valkey yes, Redis 7.0 no)."""
    live = fleet.json("consumers", fleet.ok)["consumers"]
    (c,) = [c for c in live if c["consumer"] == "live-1"]
    assert c["alive"] is True and c["host"] == socket.gethostname() and c["pid"] == fleet.daemon.pid
    assert c["pending"] == 0 and c["last_seen_seconds"] is not None and c["last_seen_seconds"] < 5
    (ghost,) = fleet.json("consumers", fleet.orphan)["consumers"]
    (info,) = r.xinfo_consumers(fleet.orphan, GROUP)
    assert ghost["consumer"] == "ghost" and ghost["alive"] is False and ghost["host"] is None
    assert ghost["pending"] == info["pending"] == 3
    assert 0.4 < ghost["idle_seconds"] <= info["idle"] / 1000 + 0.001  # XINFO read after ours
    assert (ghost["inactive_seconds"] is None) == ("inactive" not in info)


def test_status_lists_the_fleet_and_checks_it(fleet: Fleet, r: redis.Redis, tmp_path: Path) -> None:
    """`edged status --json` and `--check`, first over the whole situation, then with the
    simulated fleet member gone (its record deleted as at a clean stop) and a config that lists
    only the daemon's stream.

    Must hold: both daemons are listed with their record's host, pid, version, streams,
    readiness and counts (live-1: 4 processed, of which 1 dead-lettered); the groups are those of
    `edged groups`; `--check` exits 1 while anything is unhealthy and 0 once only the healthy
    daemon and its stream remain."""
    report = fleet.json("status")
    daemons = {d["consumer"]: d for d in report["daemons"]}
    assert set(daemons) == {"live-1", "frozen"}
    live = daemons["live-1"]
    assert (live["host"], live["pid"]) == (socket.gethostname(), fleet.daemon.pid)
    assert live["version"] == __version__
    assert live["streams"] == [f"{fleet.ok}/{GROUP}"] and live["ready"] is True
    assert live["processed"] == 4 and live["dead_lettered"] == 1 and live["in_flight"] == 0
    assert live["uptime_seconds"] > 0 and live["beat_age_seconds"] < 5
    assert daemons["frozen"]["host"] == "edge-sim" and daemons["frozen"]["pid"] == 4242
    verdicts = {s: g["verdict"] for s, g in by_stream(report["groups"]).items()}
    assert verdicts == {fleet.ok: "OK", fleet.orphan: "ORPHANED", fleet.stalled: "STALLED",
                        fleet.stuck: "STUCK"}
    assert report["healthy"] is False
    assert fleet.edged("status", "--check", "--sample", "0s").returncode == 1

    key = f"{fleet.prefix}daemon:frozen"
    record = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
    only_ok = write_config(tmp_path / "ok.toml", [{"stream": fleet.ok, "handler": "tests.handlers:record"}],
                           daemon={"key-prefix": fleet.prefix})
    r.delete(key)
    try:
        res = run_edged("status", "-c", str(only_ok), "--url", fleet.server.url, "--check")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "live-1" in res.stdout and "healthy" in res.stdout.splitlines()[-1]
    finally:
        r.hset(key, mapping=record)
        r.pexpire(key, 300_000)


def test_watch_refreshes_until_ctrl_c(
    fleet: Fleet, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """`edged groups STREAM --watch 0.3 --json` piped to a file, then SIGINT.

    Must hold: one JSON document per refresh; from the second on, the verdict compares with
    the previous refresh (sampled_seconds about 0.3, not the initial --sample); Ctrl-C exits 0."""
    out = tmp_path / "watch.out"
    proc = DaemonProcess.command(
        ["groups", fleet.stalled, "--watch", "0.3", "--json", "--sample", "0s",
         "-c", str(fleet.config), "--url", fleet.server.url],
        out, edged_env(),
    )
    spawned.append(proc)
    wait_for(lambda: len(out.read_text().splitlines()) >= 3, what="three refreshes")
    proc.signal(signal.SIGINT)
    assert proc.wait_exit(10) == 0, out.read_text()
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert docs[0]["groups"][0]["sampled_seconds"] is None
    assert 0.3 <= docs[1]["groups"][0]["sampled_seconds"] < 3
    assert docs[1]["groups"][0]["verdict"] == "STALLED"


# --------------------------------------------------------------------------- claim, ack


def ghost_reads(r: redis.Redis, stream: str, n: int) -> list[str]:
    ids = [r.xadd(stream, {"payload": str(i)}).decode() for i in range(n)]
    r.xgroup_create(stream, GROUP, id="0")
    r.xreadgroup(GROUP, "ghost", {stream: ">"}, count=n)
    return ids


def owners(r: redis.Redis, stream: str) -> dict[str, tuple[str, int]]:
    return {row["message_id"].decode(): (row["consumer"].decode(), row["times_delivered"])
            for row in r.xpending_range(stream, GROUP, "-", "+", 100)}


def test_claim_is_all_or_nothing(server: Server, r: redis.Redis, stream: str) -> None:
    """Three entries pending for ghost; one acked by hand. `edged claim` of a pending id with
    the acked one and an id that never existed, then of the two pending ones.

    Must hold: the first exits 1 naming both non-pending ids, and nothing changed owner; the
    second gives both to alice (XPENDING says so) with their delivery count unchanged."""
    a, b, c = ghost_reads(r, stream, 3)
    r.xack(stream, GROUP, c)
    res = run_edged("claim", stream, a, c, "1-0", "--to", "alice", "--url", server.url)
    assert res.returncode == 1
    assert c in res.stderr and "1-0" in res.stderr and "nothing was claimed" in res.stderr
    assert owners(r, stream) == {a: ("ghost", 1), b: ("ghost", 1)}
    res = run_edged("claim", stream, a, b, "--to", "alice", "--url", server.url, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"stream": stream, "group": GROUP, "to": "alice", "claimed": [a, b]}
    assert owners(r, stream) == {a: ("alice", 1), b: ("alice", 1)}


def test_ack_needs_yes_and_reports_not_pending(server: Server, r: redis.Redis, stream: str) -> None:
    """`edged ack` without --yes, then with --yes over a pending and a non-pending id, then
    with --force.

    Must hold: without --yes exit 2 and the entry is still pending; with --yes the pending
    one is acked (gone from XPENDING), the other is reported as not pending and the exit is
    1; --force acks too, exit 0."""
    a, b = ghost_reads(r, stream, 2)
    assert run_edged("ack", stream, a, "--url", server.url).returncode == 2
    assert set(owners(r, stream)) == {a, b}
    res = run_edged("ack", stream, a, "1-0", "--yes", "--url", server.url, "--json")
    assert res.returncode == 1 and "1-0" in res.stderr
    assert json.loads(res.stdout) == {"stream": stream, "group": GROUP, "acked": [a], "not_pending": ["1-0"]}
    assert set(owners(r, stream)) == {b}
    assert run_edged("ack", stream, b, "--force", "--url", server.url).returncode == 0
    assert owners(r, stream) == {}


# --------------------------------------------------------------------------- exit codes


def test_unreachable_redis_exits_69_and_bad_config_78(tmp_path: Path, stream: str) -> None:
    """Each inspection command against a port where nothing listens, then with a config with
    an unknown key. Must hold: 69 with the URL in the message; 78 naming the field."""
    for args in (["pending", stream], ["groups"], ["consumers", stream], ["status"],
                 ["claim", stream, "1-0", "--to", "x"], ["ack", stream, "1-0", "--yes"]):
        res = run_edged(*args, "--url", DOWN)
        assert res.returncode == 69, (args, res.stderr)
        assert "127.0.0.1:1" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nconsumr = 'x'\n")
    res = run_edged("groups", "-c", str(bad), "--url", DOWN)
    assert res.returncode == 78 and "consumr" in res.stderr


def test_stuck_threshold_comes_from_the_daemons_heartbeat(fleet: Fleet, tmp_path: Path) -> None:
    """The live daemon reads `ok` with claim-idle 2s + claim-interval 200ms and says so in its
    heartbeat record; an operator whose own config says 60s for that stream still gets the
    daemon's 2.2s as the STUCK threshold (the operator host's config only fills in for groups no
    live daemon reads, like `stuck` above)."""
    other = write_config(tmp_path / "operator.toml", [
        {"stream": fleet.ok, "handler": "tests.handlers:record", "claim-idle": "60s"},
    ], daemon={"key-prefix": fleet.prefix})
    res = run_edged("groups", fleet.ok, "-c", str(other), "--url", fleet.server.url,
                    "--sample", "0s", "--json")
    assert res.returncode == 0, res.stderr
    (g,) = by_stream(json.loads(res.stdout)["groups"]).values()
    assert g["stuck_after_seconds"] == pytest.approx(2.2)
