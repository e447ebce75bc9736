"""Poison of any shape ends handled or dead-lettered, never in a crash or an endless loop.

Entries are written with raw XADD, as any producer can: binary field names, duplicate names,
tens of thousands of fields, very large payloads, payloads that are not objects. A real daemon
consumes them; the outcome is read back from Redis (the handled list, the dead-letter stream
byte for byte, the pending list) and the daemon must still be running.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from edged.keys import DEAD_DELIVERIES, DEAD_ID, DEAD_METADATA_FIELDS, DEAD_REASON
from tests.servers import Server
from tests.support import DaemonProcess, Fleet, wait_for

HANDLER = "tests.handlers:record"


def stream_cfg(stream: str, **extra: Any) -> dict[str, Any]:
    return {"stream": stream, "handler": HANDLER, "start-id": "0", "concurrency": 4,
            "claim-idle": "1s", "claim-interval": "200ms", "retry-backoff": "100ms",
            "max-deliveries": 3, **extra}


@pytest.fixture
def fleet(server: Server, tmp_path: Path, spawned: list[DaemonProcess]) -> Fleet:
    return Fleet(server.url, tmp_path, spawned)


def xadd_raw(r: redis.Redis, stream: str, flat: list[bytes]) -> str:
    """XADD with the fields exactly as given (redis-py's dict would collapse duplicates)."""
    return str(r.execute_command("XADD", stream, "*", *flat).decode())


def dead_copies(r: redis.Redis, dead: str) -> dict[str, tuple[dict[str, bytes], list[bytes]]]:
    """Original id -> (edged's metadata, the original fields flat as stored)."""
    out = {}
    raw = r.client()  # its own connection; redis-py would make each entry a dict
    raw.response_callbacks = {**raw.response_callbacks, "XRANGE": lambda reply, **_: reply}
    for _, flat in raw.execute_command("XRANGE", dead, "-", "+"):
        meta: dict[str, bytes] = {}
        rest: list[bytes] = []
        for name, value in zip(flat[::2], flat[1::2], strict=True):
            text = name.decode(errors="replace")
            if text in DEAD_METADATA_FIELDS and text not in meta:
                meta[text] = value
            else:
                rest += [name, value]
        out[meta[DEAD_ID].decode()] = (meta, rest)
    return out


def handled_ids(r: redis.Redis, stream: str) -> set[str]:
    return {m.decode().split()[0] for m in r.lrange(f"{stream}:handled", 0, -1)}


WIDE = 10_000  # fields: well past what one Lua call can pass on (about 8 000 arguments)


def test_every_shape_of_poison_ends_handled_or_dead_lettered(
    r: redis.Redis, stream: str, fleet: Fleet
) -> None:
    """One daemon, entries of every bad shape, then a good one. Must hold: the non-UTF-8 field
    name and the duplicate field name are dead-lettered with a reason naming the fault, their
    copy byte for byte the entry's own fields; the entry with 10 000 fields that the handler
    rejects is dead-lettered whole; a handler calling sys.exit() or raising a CancelledError of
    its own fails only its entry (dead-lettered after max-deliveries), a reject reason that is not
    valid UTF-8 is written escaped, and none of them restarts the stream; the wide entry, the
    8 MiB payload and the payloads that are not objects are handled; nothing stays pending;
    the daemon is still running."""
    daemon = fleet.start("p1", [stream_cfg(stream)])
    daemon.wait_ready()
    binary = [b"\xff\xfename", b"v", b"payload", b"{}"]
    duplicate = [b"a", b"1", b"a", b"2", b"payload", b"{}"]
    wide_reject = [b"payload", b'{"reject": "too wide"}']
    for i in range(WIDE):
        wide_reject += [f"f{i}".encode(), bytes([i % 256]) * 3]
    wide_ok = [x for i in range(WIDE) for x in (f"k{i}".encode(), b"\x00\xff")]
    ids = {
        "binary": xadd_raw(r, stream, binary),
        "duplicate": xadd_raw(r, stream, duplicate),
        "wide_reject": xadd_raw(r, stream, wide_reject),
        "wide_ok": xadd_raw(r, stream, wide_ok),
        "huge": xadd_raw(r, stream, [b"payload", b'{"blob": "' + b"x" * (8 << 20) + b'"}']),
        "number": xadd_raw(r, stream, [b"payload", b"5"]),
        "list": xadd_raw(r, stream, [b"payload", b"[1, 2]"]),
        "string": xadd_raw(r, stream, [b"payload", b'"text"']),
        "undecodable": xadd_raw(r, stream, [b"payload", b"\xff{"]),
        "exit": xadd_raw(r, stream, [b"payload", b'{"exit": 3}']),
        "cancel": xadd_raw(r, stream, [b"payload", b'{"cancel-self": true}']),
        "surrogate": xadd_raw(r, stream, [b"payload", b'{"reject-surrogate": true}']),
        "good": xadd_raw(r, stream, [b"payload", b"{}"]),
    }
    dead = f"{stream}:dead"
    expect_dead = {"binary", "duplicate", "wide_reject", "undecodable", "exit", "cancel",
                   "surrogate"}
    expect_handled = set(ids) - expect_dead
    wait_for(lambda: {ids[k] for k in expect_handled} <= handled_ids(r, stream)
             and r.exists(dead) and r.xlen(dead) == len(expect_dead), 60,
             what=lambda: f"every entry settled; output:\n{daemon.output()[-3000:]}")
    wait_for(lambda: r.xpending(stream, "edged")["pending"] == 0, what="pending list drained")
    copies = dead_copies(r, dead)
    assert set(copies) == {ids[k] for k in expect_dead}
    assert not handled_ids(r, stream) & set(copies)
    meta, fields = copies[ids["binary"]]
    assert b"not UTF-8" in meta[DEAD_REASON], meta
    assert fields == binary
    meta, fields = copies[ids["duplicate"]]
    assert b"'a' appears more than once" in meta[DEAD_REASON], meta
    assert fields == duplicate
    meta, fields = copies[ids["wide_reject"]]
    assert meta[DEAD_REASON] == b"rejected: too wide"
    assert meta[DEAD_DELIVERIES] == b"1"
    assert fields == wide_reject
    assert b"undecodable" in copies[ids["undecodable"]][0][DEAD_REASON]
    assert b"SystemExit: 3" in copies[ids["exit"]][0][DEAD_REASON]
    assert b"CancelledError raised by the handler" in copies[ids["cancel"]][0][DEAD_REASON]
    assert copies[ids["surrogate"]][0][DEAD_REASON] == b"rejected: bad \\udcff"
    assert "consumer failed" not in daemon.output()  # no restart of the stream for any of them
    assert daemon.proc.poll() is None, daemon.output()
    assert "Traceback" not in daemon.output()


def test_poison_left_pending_by_a_crash_or_a_dead_peer(
    r: redis.Redis, stream: str, fleet: Fleet
) -> None:
    """A non-UTF-8 field name pending in this consumer's own history (read before a crash) and
    another pending under a peer that died. Must hold: the daemon starts, dead-letters both (one
    from its history, one by XAUTOCLAIM), handles the good entry after them, and runs on; a
    second daemon started later does not fail on anything either."""
    r.xgroup_create(stream, "edged", id="0", mkstream=True)
    mine = xadd_raw(r, stream, [b"\x80", b"x"])
    r.xreadgroup("edged", "p2", {stream: ">"}, count=1)
    peers = xadd_raw(r, stream, [b"ok", b"1", b"\xc3\x28", b"y"])
    r.xreadgroup("edged", f"gone-{uuid.uuid4().hex[:4]}", {stream: ">"}, count=1)
    good = xadd_raw(r, stream, [b"payload", b"{}"])
    daemon = fleet.start("p2", [stream_cfg(stream)])
    daemon.wait_ready()
    dead = f"{stream}:dead"
    wait_for(lambda: r.exists(dead) and set(dead_copies(r, dead)) == {mine, peers}, 30,
             what=lambda: f"both dead-lettered; output:\n{daemon.output()[-3000:]}")
    wait_for(lambda: good in handled_ids(r, stream), what="the good entry handled")
    wait_for(lambda: r.xpending(stream, "edged")["pending"] == 0, what="pending list drained")
    peer = fleet.start("p3", [stream_cfg(stream)])
    peer.wait_ready()
    assert daemon.proc.poll() is None and peer.proc.poll() is None, fleet.logs()
    assert "Traceback" not in fleet.logs()
