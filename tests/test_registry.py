"""Heartbeats, exclusive consumer names and the safe removal of dead consumers.

Real `edged start` processes against the session server; results read back from Redis.
"""

from __future__ import annotations

import signal
import socket
import uuid
from pathlib import Path

import pytest
import redis

from tests.servers import Server
from tests.support import DaemonProcess, edged_client, pending_rows, until, wait_for, write_config
from tests.support import test_env as edged_env

GROUP = "edged"


def start(
    spawned: list[DaemonProcess], server: Server, tmp_path: Path, stream: str, consumer: str,
    *extra: str, prefix: str = "edged:", expiry: str = "1h",
) -> DaemonProcess:
    cfg = write_config(
        tmp_path / f"{consumer}-{len(spawned)}.toml",
        [{"stream": stream, "handler": "tests.handlers:record", "claim-idle": "2s",
          "claim-interval": "200ms"}],
        daemon={"consumer": consumer, "heartbeat-interval": "200ms", "key-prefix": prefix,
                "consumer-expiry": expiry},
    )
    proc = DaemonProcess(
        cfg, server.url, tmp_path / f"{consumer}-{len(spawned)}.log", *extra,
        env=edged_env(EDGED_TEST_REDIS=server.url, EDGED_TEST_CONSUMER=consumer),
    )
    spawned.append(proc)
    return proc


def test_heartbeat_record_lives_while_running_and_goes_at_stop(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """A daemon runs, then gets SIGTERM. While it runs, its record under the prefix names its
    host, pid, version and streams and carries a TTL of a few beats; the last-seen hash has it.
    After a clean stop the record is gone at once, the last-seen entry stays."""
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    d = start(spawned, server, tmp_path, stream, "hb-1", prefix=prefix)
    d.wait_ready()
    key = f"{prefix}daemon:hb-1"
    record = wait_for(lambda: r.hgetall(key), what="heartbeat record")
    assert record[b"host"] == socket.gethostname().encode()
    assert int(record[b"pid"]) == d.pid
    assert record[b"consumer"] == b"hb-1"
    assert stream.encode() in record[b"streams"]
    assert 0 < r.pttl(key) <= 1000  # a few beats, at least 1 s
    assert r.hget(f"{prefix}seen", "hb-1") is not None
    first_beat = float(record[b"beat"])
    wait_for(lambda: float(r.hget(key, "beat") or 0) > first_beat, what="a later beat")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    assert not r.exists(key)
    assert r.hget(f"{prefix}seen", "hb-1") is not None


def test_second_daemon_with_a_live_name_is_refused_unless_takeover(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """A daemon holds consumer name "twin"; a second daemon with the same name exits 1 at
    once with a message naming the holder's host and pid and --takeover, having consumed
    nothing. A third with --takeover gets the name; the first notices on its next beat,
    stops, and exits 1 saying it was taken over."""
    first = start(spawned, server, tmp_path, stream, "twin")
    first.wait_ready()
    second = start(spawned, server, tmp_path, stream, "twin")
    assert second.wait_exit(30) == 1
    out = second.output()
    assert "held by a live daemon" in out and f"pid {first.pid}" in out and "--takeover" in out
    assert "ready:" not in out
    third = start(spawned, server, tmp_path, stream, "twin", "--takeover")
    third.wait_ready()
    assert first.wait_exit(30) == 1
    assert "taken over" in first.output()
    assert int(r.hget("edged:daemon:twin", "pid") or 0) == third.pid
    r.xadd(stream, {"payload": b"{}"})
    wait_for(lambda: r.llen(f"{stream}:handled") == 1, what="the new holder handles entries")


def test_dead_consumer_cleanup_never_drops_pending_entries(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """Besides the live daemon, "ghost-empty" (never beats, owns nothing) and "ghost-owner"
    (never beats, owns one entry) are in the group. With consumer-expiry 1s, ghost-empty is
    removed; ghost-owner is kept while it owns the entry, and removed only once the daemon has
    reclaimed it (claim-idle 2s) and handled it. Nothing is lost: the entry was handled, the
    PEL drains, the live consumer stays."""
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    r.xgroup_createconsumer(stream, GROUP, "ghost-empty")
    entry = r.xadd(stream, {"payload": b"{}"}).decode()
    r.xreadgroup(GROUP, "ghost-owner", {stream: ">"})
    assert r.xpending(stream, GROUP)["pending"] == 1
    d = start(spawned, server, tmp_path, stream, "live-one", expiry="1s")
    d.wait_ready()

    def names() -> set[str]:
        return {c["name"].decode() for c in r.xinfo_consumers(stream, GROUP)}

    wait_for(lambda: "ghost-empty" not in names(), timeout=20, what="ghost-empty removed")
    # ghost-owner may only go once its entry was taken over and handled.
    wait_for(lambda: "ghost-owner" not in names(), timeout=30, what="ghost-owner removed")
    handled = [x.decode().split()[0] for x in r.lrange(f"{stream}:handled", 0, -1)]
    assert entry in handled
    wait_for(lambda: r.xpending(stream, GROUP)["pending"] == 0, what="the PEL drained")
    assert "live-one" in names()
    assert "removed dead consumer ghost-empty" in d.output()


@pytest.mark.anyio
async def test_cleanup_pass_deletes_only_dead_consumers_that_own_nothing(
    server: Server, r: redis.Redis, stream: str
) -> None:
    """One cleanup pass (edged.daemon.cleanup.remove_dead_consumers, run in-process with a
    500 ms consumer-expiry) over a group whose consumers are all idle past the expiry:
    "ghost" (no heartbeat record, never seen, owns nothing), "holder" (no heartbeat, owns one
    entry: its entry could not be reclaimed yet), "beating" (owns nothing, but its heartbeat
    record exists), "recent" (owns nothing, its record expired but the last-seen hash has it
    within the expiry) and "me" (the consumer running the pass).

    Must hold: the pass returns ["ghost"] and XINFO CONSUMERS no longer lists it (the delete
    script ran: a no-op cleanup fails here); every other consumer stays, and "holder" still
    owns its entry with its delivery count unchanged. Asked directly, the script itself also
    refuses "holder" ('pending'), whatever the pass's own filter did, and "me" with an expiry
    longer than its idle time ('recent'), and reports an unknown name ('gone')."""
    from edged.daemon.cleanup import remove_dead_consumers
    from edged.keys import daemon_key, seen_key
    from edged.scripts import Scripts

    prefix = f"t{uuid.uuid4().hex[:6]}:"
    expiry_ms = 500
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for name in ("ghost", "beating", "recent", "me"):
        r.xgroup_createconsumer(stream, GROUP, name)
    entry = r.xadd(stream, {"payload": b"{}"}).decode()
    r.xreadgroup(GROUP, "holder", {stream: ">"})
    r.hset(daemon_key(prefix, "beating"), mapping={"consumer": "beating"})
    r.pexpire(daemon_key(prefix, "beating"), 60_000)

    def idle() -> dict[str, int]:
        return {c["name"].decode(): int(c["idle"]) for c in r.xinfo_consumers(stream, GROUP)}

    await until(lambda: len(idle()) == 5 and min(idle().values()) > expiry_ms,
                what=lambda: f"every consumer idle past {expiry_ms} ms: {idle()}")
    # Seen just now by the server's clock (TIME), as a heartbeat would have recorded it.
    now_s, now_us = r.time()
    r.hset(seen_key(prefix), "recent", now_s * 1000 + now_us // 1000)

    client = edged_client(server.url)
    try:
        scripts = Scripts(client)
        removed = await remove_dead_consumers(client, scripts, prefix, stream, GROUP, "me",
                                              expiry_ms)
        holder_verdict = await scripts.delete_consumer(stream, GROUP, "holder", expiry_ms)
        # The script's own idle check: "me" was idle past 500 ms, not past a minute.
        me_verdict = await scripts.delete_consumer(stream, GROUP, "me", 60_000)
        unknown_verdict = await scripts.delete_consumer(stream, GROUP, "nobody", expiry_ms)
    finally:
        await client.aclose()
        r.delete(daemon_key(prefix, "beating"), seen_key(prefix))

    assert removed == ["ghost"]
    assert set(idle()) == {"holder", "beating", "recent", "me"}
    assert holder_verdict == "pending"
    assert (me_verdict, unknown_verdict) == ("recent", "gone")
    assert [(row["id"], row["consumer"], row["deliveries"])
            for row in pending_rows(r, stream)] == [(entry, "holder", 1)]
