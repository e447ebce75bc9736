"""Fault scenarios with real `edged start` processes: SIGKILL, SIGSTOP, long and poison handlers,
entries deleted while pending, retry backoff.

Each test starts daemons as subprocesses against the session server, does something bad to
them or to the stream, and checks the outcome from Redis (XPENDING, the dead-letter stream,
what tests.handlers:record_timed wrote) and from the daemons' own output. Timings are small
(claim-idle 1500ms, claim-interval 200ms) so the whole file stays well under 90 s.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from edged.keys import DEAD_DELIVERIES, DEAD_ID, DEAD_REASON
from tests.servers import Server
from tests.support import DaemonProcess, Fleet, pending_rows, wait_for

pytestmark = pytest.mark.slow

GROUP = "edged"
HANDLER = "tests.handlers:record_timed"
CLAIM_IDLE = 1.5
CLAIM_INTERVAL = 0.2


# --------------------------------------------------------------------------- helpers


def uid() -> str:
    return uuid.uuid4().hex[:6]


def stream_cfg(stream: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "stream": stream, "group": GROUP, "handler": HANDLER, "start-id": "0",
        "concurrency": 4, "claim-idle": f"{int(CLAIM_IDLE * 1000)}ms",
        "claim-interval": f"{int(CLAIM_INTERVAL * 1000)}ms", "retry-backoff": "100ms",
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def fleet(server: Server, tmp_path: Path, spawned: list[DaemonProcess]) -> Fleet:
    return Fleet(server.url, tmp_path, spawned)


def add(r: redis.Redis, stream: str, body: dict[str, Any]) -> str:
    return r.xadd(stream, {"payload": json.dumps(body)}).decode()


def add_many(r: redis.Redis, stream: str, bodies: list[dict[str, Any]]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for body in bodies:
        pipe.xadd(stream, {"payload": json.dumps(body)})
    return [x.decode() for x in pipe.execute()]


def marks(r: redis.Redis, key: str) -> list[tuple[str, str, int, float]]:
    """(id, consumer, delivery, wall time) of the runs record_timed wrote to list ``key``."""
    out = []
    for raw in r.lrange(key, 0, -1):
        entry_id, consumer, delivery, at = raw.decode().split()[:4]
        out.append((entry_id, consumer, int(delivery), float(at)))
    return out


def handled_ids(r: redis.Redis, stream: str) -> set[str]:
    return {m[0] for m in marks(r, f"{stream}:handled")}



def pending_count(r: redis.Redis, stream: str) -> int:
    return int(r.xpending(stream, GROUP)["pending"])


def owned_by(r: redis.Redis, stream: str, consumer: str) -> list[str]:
    return [row["id"] for row in pending_rows(r, stream) if row["consumer"] == consumer]


def dead_entries(r: redis.Redis, stream: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in r.xrange(f"{stream}:dead")
    ]


def explain(r: redis.Redis, stream: str, fleet: Fleet) -> str:
    return (
        f"\npending: {pending_rows(r, stream)}\nstarted: {marks(r, f'{stream}:started')}\n"
        f"handled: {marks(r, f'{stream}:handled')}\nfailed: {marks(r, f'{stream}:failed')}\n"
        f"{fleet.logs()}"
    )


# --------------------------------------------------------------------------- scenarios


def test_sigkilled_daemon_entries_are_taken_over_by_peers(
    r: redis.Redis, stream: str, fleet: Fleet
) -> None:
    """Three daemons share a group; 60 entries ({"sleep": 0.2}) are published; one daemon is
    SIGKILLed while XPENDING shows entries owned by it. Then: the survivors take over every
    entry the dead consumer held within claim-idle + claim-interval + 3 s of the kill (the
    measured takeover time is printed), those entries are run again by a survivor with
    delivery >= 2, every published entry is handled at least once, and the PEL drains."""
    tag = uid()
    names = [f"kill{i}-{tag}" for i in range(3)]
    daemons = [fleet.start(n, [stream_cfg(stream)]) for n in names]
    for d in daemons:
        d.wait_ready()
    victim, victim_name = daemons[0], names[0]
    published = add_many(r, stream, [{"sleep": 0.2, "n": i} for i in range(60)])

    def victim_is_busy() -> bool:
        started = {m[0] for m in marks(r, f"{stream}:started") if m[1] == victim_name}
        return bool(started & set(owned_by(r, stream, victim_name)))

    wait_for(victim_is_busy, timeout=15, what="the victim running entries it owns")
    victim.proc.kill()
    killed_at = time.monotonic()
    victim.proc.wait()
    held = owned_by(r, stream, victim_name)
    assert held, "the SIGKILLed daemon held no pending entry: the kill tests nothing"
    assert len(handled_ids(r, stream)) < len(published), "the kill came after all the work"

    bound = CLAIM_IDLE + CLAIM_INTERVAL + 3
    try:
        wait_for(lambda: not owned_by(r, stream, victim_name), timeout=bound + 2,
                 interval=0.01, what="no pending entry owned by the dead consumer")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{explain(r, stream, fleet)}") from None
    takeover = time.monotonic() - killed_at
    print(f"\ntakeover of {len(held)} entries held by a SIGKILLed daemon: {takeover:.2f}s "
          f"(claim-idle {CLAIM_IDLE}s, claim-interval {CLAIM_INTERVAL}s)")
    assert takeover < bound, f"takeover took {takeover:.2f}s, over {bound}s"

    try:
        wait_for(lambda: handled_ids(r, stream) >= set(published), timeout=20,
                 what="every published entry handled")
        wait_for(lambda: pending_count(r, stream) == 0, timeout=10, what="the PEL drained")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{explain(r, stream, fleet)}") from None
    reruns = {m[0] for m in marks(r, f"{stream}:handled") if m[1] != victim_name and m[2] >= 2}
    assert set(held) <= reruns, (held, marks(r, f"{stream}:handled"))
    for d in daemons[1:]:
        assert d.proc.poll() is None, d.output()
    assert any("reclaimed" in d.output() for d in daemons[1:]), fleet.logs()


@pytest.mark.parametrize("cancel", [False, True], ids=["finish-then-ack", "cancel-on-lost-lease"])
def test_paused_daemon_cannot_ack_away_what_a_peer_claimed(
    r: redis.Redis, stream: str, fleet: Fleet, cancel: bool
) -> None:
    """Daemons A and B, concurrency 1 each. A starts entry X and is SIGSTOPped inside the
    handler. Past claim-idle B reclaims X (delivery 2) and hangs on it ({"hang-from": 2}), so B
    is full. A is then SIGCONTed:
    - cancel-on-lost-lease off, X = {"sleep": 1.5, ...}: A's handler finishes and A acks X;
      the fenced ack must refuse it ("no longer owned");
    - cancel-on-lost-lease on, X = {"sleep": 8, ...}: A's lease extension must find the lease
      lost ("lost the lease", reported once) and cancel the handler, which never finishes.
    Either way A must then go on working: five new entries (only A has a free slot) are
    handled by A and acked. X must still be pending, owned by B with delivery 2 and not handled
    by B; once the test sets <stream>:release B handles X and the PEL drains."""
    tag = uid()
    a_name, b_name = f"paused-{tag}", f"peer-{tag}"
    cfg = [stream_cfg(stream, concurrency=1, **{"cancel-on-lost-lease": cancel})]
    a = fleet.start(a_name, cfg)
    a.wait_ready()
    x = add(r, stream, {"sleep": 8 if cancel else 1.5, "hang-from": 2})
    wait_for(lambda: any(m[0] == x and m[1] == a_name for m in marks(r, f"{stream}:started")),
             timeout=10, what="A running X")
    a.signal(signal.SIGSTOP)
    b = fleet.start(b_name, cfg)
    b.wait_ready()
    try:
        wait_for(lambda: (x, b_name, 2) in [m[:3] for m in marks(r, f"{stream}:started")],
                 timeout=CLAIM_IDLE + 10, what="B reclaimed X and runs it")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{explain(r, stream, fleet)}") from None
    assert [(row["consumer"], row["deliveries"]) for row in pending_rows(r, stream)
            if row["id"] == x] == [(b_name, 2)]

    a.signal(signal.SIGCONT)
    try:
        if cancel:
            wait_for(lambda: (x, a_name, 1) in [m[:3] for m in marks(r, f"{stream}:cancelled")],
                     timeout=10, what="A's handler of X cancelled")
        else:
            # Not cancelled: the handler finishes, and A's ack of X goes out before A has a
            # free slot again (concurrency 1), so before A reads the entries below.
            wait_for(lambda: (x, a_name, 1) in [m[:3] for m in marks(r, f"{stream}:handled")],
                     timeout=10, what="A's handler of X finished")
        # B is full (hanging on X): only A can run these, so A must have its slot back.
        others = add_many(r, stream, [{"n": i} for i in range(5)])
        wait_for(lambda: handled_ids(r, stream) >= set(others), timeout=10,
                 what="A handled the entries published after SIGCONT")
        wait_for(lambda: not set(others) & {row["id"] for row in pending_rows(r, stream)},
                 timeout=10, what="those entries acked")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{explain(r, stream, fleet)}") from None
    assert {m[1] for m in marks(r, f"{stream}:handled") if m[0] in others} == {a_name}
    rows = [row for row in pending_rows(r, stream) if row["id"] == x]
    assert [(row["consumer"], row["deliveries"]) for row in rows] == [(b_name, 2)], (
        f"X left B's pending list before B finished it: {rows}{explain(r, stream, fleet)}"
    )
    assert (x, b_name) not in [m[:2] for m in marks(r, f"{stream}:handled")]
    if cancel:
        assert "lost the lease" in a.output(), a.output()
        assert (x, a_name) not in [m[:2] for m in marks(r, f"{stream}:handled")]
        assert "no longer owned" not in a.output(), a.output()
    else:
        assert "no longer owned" in a.output(), f"A reported no stale ack:\n{a.output()}"
    # One lost lease, one report (not one per lease tick for as long as A remembers X).
    assert a.output().count("lost the lease") <= 1, a.output()

    r.set(f"{stream}:release", 1)
    try:
        wait_for(lambda: (x, b_name, 2) in [m[:3] for m in marks(r, f"{stream}:handled")],
                 timeout=10, what="B handled X once released")
        wait_for(lambda: pending_count(r, stream) == 0, timeout=10, what="the PEL drained")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{explain(r, stream, fleet)}") from None
    assert handled_ids(r, stream) >= {x, *others}
    assert a.proc.poll() is None and b.proc.poll() is None, fleet.logs()


def test_long_handler_keeps_its_lease(r: redis.Redis, stream: str, fleet: Fleet) -> None:
    """Two daemons; one entry whose handler runs 3x claim-idle ({"sleep": 4.5}) among a few
    short ones. The running daemon's lease extensions must keep every XAUTOCLAIM (the peer's,
    and its own, which would count a delivery) off it: while it runs, XPENDING shows it owned
    by the daemon that started it with delivery 1 at every look; it is started exactly once
    and handled once, nobody reports a lost lease or a stale ack, and the PEL drains."""
    tag = uid()
    names = [f"long{i}-{tag}" for i in range(2)]
    daemons = [fleet.start(n, [stream_cfg(stream)]) for n in names]
    for d in daemons:
        d.wait_ready()
    long_id = add(r, stream, {"sleep": 3 * CLAIM_IDLE})
    short = add_many(r, stream, [{"sleep": 0.05, "n": i} for i in range(6)])
    owners: set[tuple[str, int]] = set()  # (consumer, deliveries) of every look at its PEL row

    def all_handled() -> bool:
        owners.update((row["consumer"], row["deliveries"])
                      for row in pending_rows(r, stream) if row["id"] == long_id)
        return handled_ids(r, stream) >= {long_id, *short}

    try:
        wait_for(all_handled, timeout=20, what="all entries handled")
        wait_for(lambda: pending_count(r, stream) == 0, timeout=10, what="the PEL drained")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{explain(r, stream, fleet)}") from None
    starts = [m for m in marks(r, f"{stream}:started") if m[0] == long_id]
    runs = [m for m in marks(r, f"{stream}:handled") if m[0] == long_id]
    assert len(starts) == 1 and starts[0][2] == 1, f"long entry started {starts}"
    assert len(runs) == 1, runs
    assert runs[0][3] - starts[0][3] >= 3 * CLAIM_IDLE - 0.1
    assert owners == {(starts[0][1], 1)}, f"the long entry's PEL row changed: {owners}"
    for d in daemons:
        assert "lost the lease" not in d.output(), d.output()
        assert "no longer owned" not in d.output(), d.output()


def test_poison_entry_is_dead_lettered_after_max_deliveries(
    r: redis.Redis, stream: str, fleet: Fleet
) -> None:
    """Two daemons with max-deliveries 3; one entry whose handler always raises ({"fail":
    true}) among 20 good ones. The poison entry runs exactly 3 times (across the daemons, with
    deliveries 1, 2, 3), then sits in <stream>:dead with edged-reason "max-deliveries
    exceeded...", its original id and edged-deliveries 3; every good entry is handled and the
    PEL drains."""
    tag = uid()
    names = [f"poison{i}-{tag}" for i in range(2)]
    cfg = [stream_cfg(stream, **{"max-deliveries": 3})]
    daemons = [fleet.start(n, cfg) for n in names]
    for d in daemons:
        d.wait_ready()
    good = add_many(r, stream, [{"sleep": 0.05, "n": i} for i in range(10)])
    poison = add(r, stream, {"fail": True})
    good += add_many(r, stream, [{"sleep": 0.05, "n": i} for i in range(10, 20)])
    try:
        wait_for(lambda: dead_entries(r, stream), timeout=15, what="a dead-lettered entry")
        wait_for(lambda: handled_ids(r, stream) >= set(good), timeout=15,
                 what="every good entry handled")
        wait_for(lambda: pending_count(r, stream) == 0, timeout=10, what="the PEL drained")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{explain(r, stream, fleet)}") from None
    dead = dead_entries(r, stream)
    assert len(dead) == 1, dead
    assert dead[0][DEAD_ID] == poison
    assert "max-deliveries exceeded" in dead[0][DEAD_REASON], dead[0]
    assert dead[0][DEAD_DELIVERIES] == "3", dead[0]
    assert json.loads(dead[0]["payload"]) == {"fail": True}
    failed = [m for m in marks(r, f"{stream}:failed") if m[0] == poison]
    assert sorted(m[2] for m in failed) == [1, 2, 3], failed
    assert len([m for m in marks(r, f"{stream}:started") if m[0] == poison]) == 3
    assert poison not in handled_ids(r, stream)
    assert not dead_entries(r, stream)[1:]


def test_pending_entries_deleted_from_the_stream_are_dropped_not_run(
    r: redis.Redis, stream: str, fleet: Fleet
) -> None:
    """Six entries are read by a consumer "ghost" that never runs (a plain XREADGROUP), so
    they sit in its PEL; then one is XDELed and one is trimmed away (XTRIM MINID). A daemon
    started on the group must, after claim-idle, reclaim and handle the four live entries
    (delivery 2), drop the two deleted ones from the PEL without running them, say so in its
    log, and leave the PEL empty."""
    ghost = f"ghost-{uid()}"
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids = add_many(r, stream, [{"n": i} for i in range(6)])
    reply = r.xreadgroup(GROUP, ghost, {stream: ">"}, count=10)
    assert len(reply[0][1]) == 6
    assert r.xdel(stream, ids[3]) == 1
    assert r.xtrim(stream, minid=ids[1], approximate=False) == 1
    assert pending_count(r, stream) == 6, "the PEL keeps deleted entries"
    deleted, live = {ids[0], ids[3]}, {ids[1], ids[2], ids[4], ids[5]}

    name = f"survivor-{uid()}"
    d = fleet.start(name, [stream_cfg(stream)])
    d.wait_ready()
    try:
        wait_for(lambda: handled_ids(r, stream) >= live, timeout=CLAIM_IDLE + 10,
                 what="the live entries reclaimed and handled")
        wait_for(lambda: pending_count(r, stream) == 0, timeout=10, what="the PEL drained")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{explain(r, stream, fleet)}") from None
    started = marks(r, f"{stream}:started")
    assert {m[0] for m in started} == live, started
    assert sorted((m[0], m[1], m[2]) for m in marks(r, f"{stream}:handled")) == sorted(
        (i, name, 2) for i in live
    )
    out = d.output()
    assert "deleted" in out and all(i in out for i in deleted), out


def test_retries_back_off_without_waiting_for_claim_idle(
    r: redis.Redis, stream: str, fleet: Fleet
) -> None:
    """One daemon, claim-idle 10s, retry-backoff 200ms, max-deliveries 4; an entry whose
    handler raises Retry every time ({"retry": true}). Its 4 runs (deliveries 1..4) must all
    happen within 5 s of the first, far sooner than claim-idle (retries do not wait for a
    reclaim), yet at least 150 ms apart (no hot loop), each wait at least the doubled backoff
    (200, 400, 800 ms less 20% jitter); after the 4th run it is dead-lettered and the PEL
    drains. A good entry published alongside is handled once."""
    name = f"retry-{uid()}"
    cfg = [stream_cfg(stream, **{"claim-idle": "10s", "retry-backoff": "200ms",
                                 "max-deliveries": 4})]
    d = fleet.start(name, cfg)
    d.wait_ready()
    entry = add(r, stream, {"retry": True})
    good = add(r, stream, {"n": 1})
    try:
        wait_for(lambda: dead_entries(r, stream), timeout=10, what="the entry dead-lettered")
        wait_for(lambda: pending_count(r, stream) == 0, timeout=5, what="the PEL drained")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{explain(r, stream, fleet)}") from None
    runs = sorted((m for m in marks(r, f"{stream}:failed") if m[0] == entry), key=lambda m: m[3])
    assert [m[2] for m in runs] == [1, 2, 3, 4], runs
    times = [m[3] for m in runs]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    print(f"\nretry gaps (backoff 200ms doubling): {gaps}")
    assert times[-1] - times[0] < 5, f"retries waited too long: gaps {gaps}"
    assert min(gaps) >= 0.15, f"retries hot-looped: gaps {gaps}"
    # The n-th wait is 200ms * 2^(n-1), less up to 20% jitter; it can only come out longer.
    floors = [0.2 * 2**n * 0.8 - 0.01 for n in range(3)]
    assert all(g >= f for g, f in zip(gaps, floors, strict=True)), (gaps, floors)
    dead = dead_entries(r, stream)
    assert len(dead) == 1 and dead[0][DEAD_ID] == entry, dead
    assert "max-deliveries exceeded" in dead[0][DEAD_REASON], dead[0]
    assert "told to retry" in dead[0][DEAD_REASON], dead[0]
    assert dead[0][DEAD_DELIVERIES] == "4", dead[0]
    assert [m[:3] for m in marks(r, f"{stream}:handled")] == [(good, name, 1)]
