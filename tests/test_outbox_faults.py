"""Fault scenarios of the durable outbox, with real `edged start` processes and real servers.

What is proven:

- Redis SIGSTOPped while a producer publishes: every publish is still answered 202 (accepted
  on disk), the forwarder's round trip to the paused server times out, and once Redis resumes
  every accepted entry arrives: the stream holds exactly the accepted message ids, with their
  payloads, in the accepted order once duplicates (same ``edged-msgid``, same fields) are
  dropped keeping the first; at most one batch is duplicated per failed forward attempt; the
  outbox drains to 0.
- Redis SIGKILLed and started again empty on the same port: entries accepted while it was gone
  wait in the outbox and all arrive, in order, once it is back.
- The daemon SIGKILLed in the middle of a flush (the first batch XADDed, its WAIT pending
  because the only replica is paused): after a restart nothing is lost, and the only
  duplicates are that first batch's entries, carrying the same message id and fields. A less
  controlled variant kills it wherever a flush of small batches happens to be: at most one
  batch of consecutive entries is duplicated.
- A full outbox (max-entries) refuses publishes whole (HTTP 507 naming max-entries, exit 75
  for ``edged publish --via-daemon``), none of the refused entries ever reaches Redis, and
  publishing is accepted again once the outbox has drained.
- An outbox path holding garbage, a damaged or truncated outbox, an SQLite file that is not an
  outbox, or a directory stops ``edged start`` with exit 78 naming it, before anything is
  consumed, and leaves its bytes as they were; a second daemon on an outbox in use is refused
  (exit 78, "in use").

Two tests cover what the first version got wrong: a foreign SQLite file in rollback-journal
mode must not be switched to WAL before it is refused, and damage to an outbox whose entries
are still in its -wal file must stop start-up rather than lose them silently.

Every server that is paused or killed is the test's own (never the session server), and is
always resumed in a ``finally``. Waits are on conditions with deadlines, never bare sleeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from tests.servers import Server, free_port
from tests.support import DaemonProcess, run_edged, wait_for, write_config

pytestmark = pytest.mark.slow

MSGID = b"edged-msgid"
PAYLOAD = b"payload"
EXIT_TEMPFAIL = 75
EXIT_CONFIG = 78
# The forwarder retries with a backoff capped at 10 s; a redis-py socket timeout (11 s) may
# come first. Flushing a backlog may thus take ~15 s to start after Redis is back.
FLUSH_TIMEOUT = 40.0
# A start refused for its outbox ends within a second or two; one that runs on is a failure.
START_TIMEOUT = 20.0


# --------------------------------------------------------------------------- helpers


def uid() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Outboxd:
    """One `edged start` with an [outbox], reached over HTTP on its [daemon] listen port."""

    config: Path
    port: int
    proc: DaemonProcess

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float = 30.0) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body,
                               headers={"Content-Type": "application/x-ndjson"} if body else {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def publish(self, stream: str, payloads: list[Any]) -> tuple[int, dict[str, Any]]:
        """POST the payloads as NDJSON; (status, decoded JSON reply)."""
        body = "".join(json.dumps(p) + "\n" for p in payloads).encode()
        status, data = self.request("POST", "/v1/publish/" + quote(stream, safe=""), body)
        return status, json.loads(data)

    def accept(self, stream: str, payloads: list[Any]) -> list[str]:
        """Publish and insist on 202; the message ids, in the order given."""
        status, reply = self.publish(stream, payloads)
        assert status == 202, f"publish answered {status} {reply}\n{self.proc.output()}"
        assert reply["accepted"] == len(payloads) == len(reply["ids"]), reply
        return list(reply["ids"])

    def metrics(self) -> dict[str, float]:
        """The /metrics samples, by name with labels (``edged_outbox_entries``)."""
        status, data = self.request("GET", "/metrics")
        assert status == 200, data
        samples = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def outbox_entries(self) -> float:
        return self.metrics()["edged_outbox_entries"]

    def answers(self) -> bool:
        try:
            return self.request("GET", "/metrics", timeout=2)[0] == 200
        except OSError:
            return False


def outbox_config(tmp_path: Path, name: str, redis_url: str, outbox: dict[str, Any],
                  streams: list[dict[str, Any]] | None = None) -> tuple[Path, int]:
    """A config with an [outbox] (and by default no stream); (its path, the listen port)."""
    port = free_port()
    cfg = write_config(
        tmp_path / f"{name}.toml", streams or [],
        daemon={"listen": f"127.0.0.1:{port}", "consumer": f"{name}-{uid()}",
                "shutdown-grace": "2s"},
        redis={"url": redis_url}, outbox=outbox,
    )
    return cfg, port


def start(config: Path, port: int, log: Path, spawned: list[DaemonProcess],
          ready: bool = True) -> Outboxd:
    """`edged start -c config`; ``ready``: wait for its "ready:" line (Redis reached), else
    only until its HTTP port answers (publishes are taken before Redis is reached)."""
    proc = DaemonProcess(config, None, log)
    spawned.append(proc)
    d = Outboxd(config, port, proc)
    if ready:
        proc.wait_ready()
    else:
        wait_for(lambda: d.answers() or proc.proc.poll() is not None, 20,
                 what=lambda: f"the daemon's HTTP port; output:\n{proc.output()}")
        assert proc.proc.poll() is None, proc.output()
    return d


@contextlib.contextmanager
def paused(server: Server) -> Iterator[None]:
    """SIGSTOP ``server`` for the block; it is SIGCONTed however the block ends."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        resume(server)


def resume(server: Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGCONT)


def own_server(tmp_path: Path, name: str, extra: list[str] | None = None) -> Server:
    return Server(port=free_port(), data_dir=tmp_path / name, extra=extra or []).start()


def stream_entries(r: redis.Redis, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
    """(edged-msgid, fields) of every entry in the stream, in stream order."""
    rows: list[tuple[bytes, dict[bytes, bytes]]] = r.xrange(stream)  # type: ignore[assignment]
    return [(fields[MSGID].decode(), fields) for _, fields in rows]


def msgids_in(r: redis.Redis, stream: str) -> set[str]:
    return {m for m, _ in stream_entries(r, stream)}


def check_delivered(entries: list[tuple[str, dict[bytes, bytes]]], accepted: list[str],
                    payloads: dict[str, Any]) -> dict[str, int]:
    """Assert the stream holds exactly the accepted entries, in the accepted order once
    duplicates are dropped keeping the first, each copy of a message id with the same fields,
    each in edged's shape (edged-msgid first, then payload) with its own payload.

    Returns how many times each duplicated message id appears (only those seen twice or more).
    """
    assert len(set(accepted)) == len(accepted), "the daemon answered a message id twice"
    assert accepted == sorted(accepted), "message ids are not increasing in acceptance order"
    first: dict[str, dict[bytes, bytes]] = {}
    order: list[str] = []
    counts: dict[str, int] = {}
    for msgid, fields in entries:
        counts[msgid] = counts.get(msgid, 0) + 1
        if msgid in first:
            assert fields == first[msgid], (
                f"two copies of {msgid} differ: {first[msgid]} and {fields}")
            continue
        first[msgid] = fields
        order.append(msgid)
    missing = set(accepted) - set(first)
    assert not missing, f"{len(missing)} accepted entries never arrived, e.g. {sorted(missing)[:3]}"
    extra = set(first) - set(accepted)
    assert not extra, f"{len(extra)} entries nobody had accepted, e.g. {sorted(extra)[:3]}"
    if order != accepted:
        at = next(i for i, (a, b) in enumerate(zip(order, accepted, strict=True)) if a != b)
        raise AssertionError(f"out of the accepted order from position {at}: "
                             f"{order[at:at + 3]} instead of {accepted[at:at + 3]}")
    for msgid in accepted:
        fields = first[msgid]
        assert list(fields) == [MSGID, PAYLOAD], f"{msgid}: fields {list(fields)}"
        assert json.loads(fields[PAYLOAD]) == payloads[msgid], (msgid, fields)
    return {m: c for m, c in counts.items() if c > 1}


def publish_numbered(d: Outboxd, stream: str, numbers: range, per_request: int,
                     payloads: dict[str, Any]) -> list[str]:
    """Publish {"n": i} for each number, ``per_request`` lines per request, all 202; the ids in
    the order accepted (``payloads`` learns each id's payload)."""
    ids: list[str] = []
    for start_at in range(numbers.start, numbers.stop, per_request):
        batch = [{"n": i} for i in range(start_at, min(start_at + per_request, numbers.stop))]
        got = d.accept(stream, batch)
        payloads.update(zip(got, batch, strict=True))
        ids += got
    return ids


def forward_failures(d: Outboxd) -> int:
    """How many forward attempts the daemon reported failed (each may leave one batch in
    Redis and send it again: the only legal source of duplicates)."""
    return d.proc.output().count("cannot forward to stream")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- Redis faults


def test_redis_paused_while_publishing_loses_nothing_and_keeps_order(
        tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    """5 000 entries ({"n": i}) in requests of 50, batch 200. After 1 000 are accepted the
    server is SIGSTOPped; the other 4 000 are published while it is paused: every request must
    get 202. The server stays paused until the forwarder has reported two failed round trips
    (its socket timed out: the batch it sent may still run once the server resumes, and is sent
    again), and /metrics shows entries waiting. After SIGCONT the stream must hold exactly the
    5 000 accepted message ids, payloads intact, in the accepted order once duplicates (legal:
    same msgid, same fields) are dropped keeping the first; at most that one batch is
    duplicated, once, however many retries the hang saw; the outbox must drain to 0."""
    srv = own_server(tmp_path, "srv")
    r = srv.client()
    stream = f"ob:{uid()}"
    try:
        cfg, port = outbox_config(tmp_path, "paused", srv.url,
                                  {"path": str(tmp_path / "outbox"), "batch": 200})
        d = start(cfg, port, tmp_path / "daemon.log", spawned)
        payloads: dict[str, Any] = {}
        accepted = publish_numbered(d, stream, range(0, 1000), 50, payloads)
        with paused(srv):
            accepted += publish_numbered(d, stream, range(1000, 5000), 50, payloads)
            # Two failed attempts: the second one is a retry while Redis still hangs, which
            # must send nothing (a probe first) rather than queue another copy of the batch.
            d.proc.wait_output("cannot forward to stream", timeout=60, count=2)
            assert d.outbox_entries() > 0, "nothing waited in the outbox: the pause tested nothing"
        wait_for(lambda: msgids_in(r, stream) >= set(accepted), FLUSH_TIMEOUT,
                 what=lambda: f"all 5000 entries in the stream (xlen {r.xlen(stream)}); "
                              f"daemon:\n{d.proc.output()}")
        wait_for(lambda: d.outbox_entries() == 0, 15, what="the outbox drained")
        dups = check_delivered(stream_entries(r, stream), accepted, payloads)
        assert [payloads[m]["n"] for m in accepted] == list(range(5000))
        failures = forward_failures(d)
        print(f"\n{r.xlen(stream)} entries in the stream for 5000 accepted; "
              f"{len(dups)} message ids duplicated; {failures} failed forward attempts")
        assert len(dups) <= 200 and max(dups.values(), default=0) <= 2, (
            f"{len(dups)} ids duplicated over {failures} failed attempts: more than the one "
            "batch in flight when Redis stopped answering")
        assert d.proc.proc.poll() is None, d.proc.output()
    finally:
        resume(srv)
        r.close()
        srv.stop()


def test_redis_killed_and_restarted_empty_gets_every_waiting_entry(
        tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    """1 000 entries are published and reach Redis; the server is SIGKILLed (no persistence:
    what it had is gone, which is not the outbox's concern). 4 000 more are published while no
    server runs: all 202, and all 4 000 wait in the outbox. A new server on the same port and
    data directory must then receive every one of those 4 000, in the accepted order, payloads
    intact, and the outbox must drain to 0."""
    srv = own_server(tmp_path, "srv")
    stream = f"ob:{uid()}"
    r = srv.client()
    restarted: Server | None = None
    try:
        cfg, port = outbox_config(tmp_path, "killed", srv.url,
                                  {"path": str(tmp_path / "outbox"), "batch": 200})
        d = start(cfg, port, tmp_path / "daemon.log", spawned)
        payloads: dict[str, Any] = {}
        before = publish_numbered(d, stream, range(0, 1000), 50, payloads)
        wait_for(lambda: msgids_in(r, stream) >= set(before), 15, what="the first 1000 in Redis")
        wait_for(lambda: d.outbox_entries() == 0, 15, what="the outbox empty before the kill")
        check_delivered(stream_entries(r, stream), before, payloads)
        r.close()

        srv.kill()
        after = publish_numbered(d, stream, range(1000, 5000), 50, payloads)
        d.proc.wait_output("cannot forward to stream", timeout=15)
        assert d.outbox_entries() == 4000, d.metrics()

        restarted = Server(port=srv.port, data_dir=srv.data_dir).start()
        r = restarted.client()
        wait_for(lambda: msgids_in(r, stream) >= set(after), FLUSH_TIMEOUT,
                 what=lambda: f"the 4000 entries accepted after the kill in the new server "
                              f"(xlen {r.xlen(stream)}); daemon:\n{d.proc.output()}")
        wait_for(lambda: d.outbox_entries() == 0, 15, what="the outbox drained")
        dups = check_delivered(stream_entries(r, stream), after, payloads)
        assert [payloads[m]["n"] for m in after] == list(range(1000, 5000))
        assert len(dups) <= 200, dups
        assert d.proc.proc.poll() is None, d.proc.output()
    finally:
        r.close()
        srv.kill()
        if restarted is not None:
            restarted.stop()


# --------------------------------------------------------------------------- daemon crash


def test_daemon_killed_mid_flush_resends_only_its_last_batch(
        tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    """A primary and one replica; the outbox has batch 100, wait-replicas 1, wait-timeout 30s.
    The replica is SIGSTOPped (its link stays up, so WAIT blocks). 1 000 entries are published
    in requests of 100 (all 202): the first batch is exactly the first request. Once XLEN is
    100 on the primary, the daemon sits in WAIT with that batch still in its outbox (/metrics:
    1 000 entries); it is SIGKILLed there, the replica resumed, and the daemon started again on
    the same config. Then every accepted entry must arrive; the message ids seen twice must be
    exactly the first batch's (each twice, the copies with identical fields), no other id
    appears twice, and without duplicates the stream is the accepted order."""
    primary = own_server(tmp_path, "primary")
    replica = own_server(tmp_path, "replica",
                         extra=["--replicaof", "127.0.0.1", str(primary.port)])
    r = primary.client()
    rr = replica.client()
    stream = f"ob:{uid()}"
    try:
        wait_for(lambda: r.info("replication").get("connected_slaves") == 1
                 and rr.info("replication").get("master_link_status") == "up", 20,
                 what="the replica linked to the primary")
        cfg, port = outbox_config(tmp_path, "crash", primary.url, {
            "path": str(tmp_path / "outbox"), "batch": 100, "wait-replicas": 1,
            "wait-timeout": "10s"})
        d = start(cfg, port, tmp_path / "daemon-1.log", spawned)
        payloads: dict[str, Any] = {}
        with paused(replica):
            accepted = publish_numbered(d, stream, range(0, 1000), 100, payloads)
            wait_for(lambda: r.xlen(stream) == 100, 15,
                     what=lambda: f"the first batch on the primary (xlen {r.xlen(stream)})")
            assert d.outbox_entries() == 1000, "the batch left the outbox before WAIT answered"
            d.proc.proc.kill()
            d.proc.wait_exit()
            assert r.xlen(stream) == 100
        d2 = start(cfg, port, tmp_path / "daemon-2.log", spawned)
        wait_for(lambda: msgids_in(r, stream) >= set(accepted), FLUSH_TIMEOUT,
                 what=lambda: f"all 1000 entries (xlen {r.xlen(stream)}); daemon:\n"
                              f"{d2.proc.output()}")
        wait_for(lambda: d2.outbox_entries() == 0, 15, what="the outbox drained")
        assert "1000 entries" in d2.proc.output(), d2.proc.output()
        dups = check_delivered(stream_entries(r, stream), accepted, payloads)
        assert set(dups) == set(accepted[:100]), (
            f"duplicated: {len(dups)} ids, {len(set(dups) - set(accepted[:100]))} of them "
            "outside the batch in flight at the kill")
        assert set(dups.values()) == {2}, dups
        assert r.xlen(stream) == 1100
    finally:
        resume(replica)
        r.close()
        rr.close()
        replica.stop()
        primary.stop()


def test_daemon_killed_at_an_arbitrary_point_of_a_flush_resends_at_most_one_batch(
        tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    """The less controlled variant: 6 000 entries wait in the outbox while no server runs on
    the configured port; a server is started there and the backlog flushes in batches of 10.
    The daemon is SIGKILLed as soon as 1 000 entries are in the stream, wherever the flush is,
    and started again. Every accepted entry must arrive in the accepted order (duplicates
    dropped); the ids seen twice must be at most one batch (10) of consecutive accepted ids,
    each copy identical."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    stream = f"ob:{uid()}"
    cfg, http_port = outbox_config(tmp_path, "arbitrary", url,
                                   {"path": str(tmp_path / "outbox"), "batch": 10})
    d = start(cfg, http_port, tmp_path / "daemon-1.log", spawned, ready=False)
    payloads: dict[str, Any] = {}
    accepted = publish_numbered(d, stream, range(0, 6000), 500, payloads)
    srv = Server(port=port, data_dir=tmp_path / "srv").start()
    r = srv.client()
    try:
        wait_for(lambda: r.xlen(stream) >= 1000, FLUSH_TIMEOUT,
                 what=lambda: f"the flush under way; daemon:\n{d.proc.output()}")
        d.proc.proc.kill()
        d.proc.wait_exit()
        at_kill = r.xlen(stream)
        assert at_kill < 6000, "the flush was over before the kill: nothing tested"
        d2 = start(cfg, http_port, tmp_path / "daemon-2.log", spawned)
        wait_for(lambda: msgids_in(r, stream) >= set(accepted), FLUSH_TIMEOUT,
                 what=lambda: f"all 6000 entries (xlen {r.xlen(stream)}); daemon:\n"
                              f"{d2.proc.output()}")
        wait_for(lambda: d2.outbox_entries() == 0, 15, what="the outbox drained")
        dups = check_delivered(stream_entries(r, stream), accepted, payloads)
        print(f"\nkilled at xlen {at_kill}; {len(dups)} ids sent twice")
        assert len(dups) <= 10, f"{len(dups)} ids duplicated, more than one batch"
        assert set(dups.values()) <= {2}, dups
        if dups:
            positions = sorted(accepted.index(m) for m in dups)
            assert positions == list(range(positions[0], positions[0] + len(positions))), (
                f"the duplicates are not one run of consecutive entries: {positions}")
    finally:
        r.close()
        srv.stop()


# --------------------------------------------------------------------------- a full outbox


def test_full_outbox_refuses_whole_and_recovers_after_a_flush(
        tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    """max-entries 100 with the server SIGSTOPped: 100 entries are accepted (two requests of
    50); a 101st entry gets 507 with a JSON error naming max-entries, so does a request of 50
    (refused whole), and `edged publish --via-daemon` exits 75 saying why on stderr. After
    SIGCONT the outbox drains to 0, a publish is accepted again (202, and the CLI exits 0),
    and the stream holds exactly the accepted entries: none of the refused ones."""
    srv = own_server(tmp_path, "srv")
    r = srv.client()
    stream = f"ob:{uid()}"
    try:
        cfg, port = outbox_config(tmp_path, "full", srv.url,
                                  {"path": str(tmp_path / "outbox"), "max-entries": 100})
        d = start(cfg, port, tmp_path / "daemon.log", spawned)
        payloads: dict[str, Any] = {}
        with paused(srv):
            accepted = publish_numbered(d, stream, range(0, 100), 50, payloads)
            status, reply = d.publish(stream, [{"refused": 100}])
            assert status == 507, (status, reply)
            assert "max-entries" in reply["error"], reply
            status, reply = d.publish(stream, [{"refused": i} for i in range(101, 151)])
            assert status == 507, (status, reply)
            cli = run_edged("publish", stream, '{"refused": "cli"}', "-c", str(cfg),
                            "--via-daemon")
            assert cli.returncode == EXIT_TEMPFAIL, (cli.returncode, cli.stdout, cli.stderr)
            assert "max-entries" in cli.stderr, cli.stderr
            assert d.outbox_entries() == 100
            assert d.metrics()['edged_outbox_refused_total{reason="full"}'] == 52
        wait_for(lambda: d.outbox_entries() == 0, FLUSH_TIMEOUT,
                 what=lambda: f"the outbox drained; daemon:\n{d.proc.output()}")

        accepted += publish_numbered(d, stream, range(100, 101), 1, payloads)
        cli = run_edged("publish", stream, '{"n": 101}', "-c", str(cfg), "--via-daemon")
        assert cli.returncode == 0, (cli.returncode, cli.stdout, cli.stderr)
        (cli_id,) = cli.stdout.split()
        accepted.append(cli_id)
        payloads[cli_id] = {"n": 101}
        wait_for(lambda: msgids_in(r, stream) >= set(accepted), FLUSH_TIMEOUT,
                 what=lambda: f"the entries accepted after the drain; daemon:\n"
                              f"{d.proc.output()}")
        dups = check_delivered(stream_entries(r, stream), accepted, payloads)
        assert not [f for _, f in stream_entries(r, stream) if b"refused" in f[PAYLOAD]]
        assert len(dups) <= 500 * forward_failures(d), dups
    finally:
        resume(srv)
        r.close()
        srv.stop()


# --------------------------------------------------------------------------- unusable files


def make_real_outbox(tmp_path: Path, spawned: list[DaemonProcess], path: Path, stream: str,
                     checkpoint: bool) -> None:
    """A real outbox holding 1 000 entries for ``stream`` (ten commits of 100): its daemon never
    reached Redis (nothing listens on its port), and was SIGKILLed. ``checkpoint``: the entries
    are then moved from the -wal file into the main file (no -wal left); else they stay in
    the -wal file, as the daemon left them."""
    cfg, port = outbox_config(tmp_path, "maker", f"redis://127.0.0.1:{free_port()}/0",
                              {"path": str(path)})
    d = start(cfg, port, tmp_path / "maker.log", spawned, ready=False)
    publish_numbered(d, stream, range(0, 1000), 100, {})
    d.proc.proc.kill()
    d.proc.wait_exit()
    if checkpoint:
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        assert not wal_of(path).exists()
    else:
        assert wal_of(path).stat().st_size > 100_000


def wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def overwrite_middle_page(path: Path) -> None:
    """Overwrite the page in the middle of an SQLite file (where the entries are) with a
    pattern that is no valid b-tree page."""
    db = sqlite3.connect(path)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    finally:
        db.close()
    assert pages > 8, pages
    with open(path, "r+b") as f:
        f.seek(page_size * (pages // 2))
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))


def make_foreign_sqlite(path: Path, journal_mode: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(f"PRAGMA journal_mode = {journal_mode}")
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO accounts (name) VALUES ('someone else''s data')")
        db.commit()
    finally:
        db.close()


def fingerprint(path: Path) -> str:
    """The sha256 of a file's bytes; a directory's sorted listing."""
    if path.is_dir():
        return repr(sorted(p.name for p in path.iterdir()))
    return sha256(path)


def refusing_config(tmp_path: Path, server: Server, stream: str, outbox_path: Path) -> Path:
    """A config on ``outbox_path`` reading ``stream`` from 0, after one entry is put in it."""
    with server.client() as r:
        r.xadd(stream, {"payload": b'{"n": 1}'})
    cfg, _ = outbox_config(
        tmp_path, "refused", server.url, {"path": str(outbox_path)},
        streams=[{"stream": stream, "group": "edged", "handler": "tests.handlers:record",
                  "start-id": "0"}])
    return cfg


def assert_nothing_consumed(r: redis.Redis, stream: str) -> None:
    assert r.xinfo_groups(stream) == [], "the daemon consumed before checking its outbox"
    assert r.xlen(stream) == 1


@pytest.mark.parametrize("kind", ["garbage", "damaged-outbox", "truncated-outbox",
                                  "foreign-sqlite", "directory"])
def test_unusable_outbox_stops_start_and_is_left_alone(
        tmp_path: Path, spawned: list[DaemonProcess], server: Server, r: redis.Redis,
        stream: str, kind: str) -> None:
    """The outbox path holds: (garbage) 40 KiB that are no SQLite file; (damaged-outbox) a
    real outbox of 1 000 waiting entries, checkpointed, with the page in its middle
    overwritten; (truncated-outbox) the same cut to half its size; (foreign-sqlite) an SQLite
    database (WAL mode) with another application's table; (directory) a directory. `edged
    start` must exit 78 with the outbox's path on stderr, the file's sha256 (the directory's
    listing) must be what it was, and the configured stream (start-id 0, one entry) must have
    no group: nothing was consumed."""
    path = tmp_path / "state" / "outbox"
    path.parent.mkdir()
    if kind == "garbage":
        path.write_bytes(bytes(range(256)) * 160)
    elif kind == "damaged-outbox":
        make_real_outbox(tmp_path, spawned, path, f"{stream}:outboxed", checkpoint=True)
        overwrite_middle_page(path)
    elif kind == "truncated-outbox":
        make_real_outbox(tmp_path, spawned, path, f"{stream}:outboxed", checkpoint=True)
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif kind == "foreign-sqlite":
        make_foreign_sqlite(path, "wal")
    else:
        path.mkdir()
        (path / "something").write_text("not ours")
    cfg = refusing_config(tmp_path, server, stream, path)
    before = fingerprint(path)
    result = run_edged("start", "-c", str(cfg), timeout=START_TIMEOUT)
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stdout, result.stderr)
    assert str(path) in result.stderr, result.stderr
    assert fingerprint(path) == before, "the outbox file was changed"
    assert_nothing_consumed(r, stream)
    assert not r.exists(f"{stream}:outboxed")


def test_foreign_rollback_journal_sqlite_file_is_left_alone(
        tmp_path: Path, server: Server, r: redis.Redis, stream: str) -> None:
    """Like foreign-sqlite above, with the database in SQLite's default (rollback journal)
    mode, as most applications leave theirs: exit 78 and the bytes unchanged."""
    path = tmp_path / "outbox"
    make_foreign_sqlite(path, "delete")
    cfg = refusing_config(tmp_path, server, stream, path)
    before = sha256(path)
    result = run_edged("start", "-c", str(cfg), timeout=START_TIMEOUT)
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stdout, result.stderr)
    assert sha256(path) == before, "the foreign file was changed"
    assert_nothing_consumed(r, stream)


@pytest.mark.parametrize("damage", ["damaged-wal", "emptied-main-file"])
def test_outbox_damaged_while_its_entries_are_in_the_wal_stops_start(
        tmp_path: Path, spawned: list[DaemonProcess], server: Server, r: redis.Redis,
        stream: str, damage: str) -> None:
    """A real outbox whose 1 000 entries are still in its -wal file (the daemon was
    SIGKILLed), then (damaged-wal) 64 bytes in the middle of the -wal overwritten, or
    (emptied-main-file) the main file truncated to 0 bytes: `edged start` must exit 78 rather
    than start on what is left, and leave both files as they were."""
    path = tmp_path / "outbox"
    outboxed = f"{stream}:outboxed"
    make_real_outbox(tmp_path, spawned, path, outboxed, checkpoint=False)
    wal = wal_of(path)
    if damage == "damaged-wal":
        with open(wal, "r+b") as f:
            f.seek(wal.stat().st_size // 2)
            f.write(b"\xde\xad\xbe\xef" * 16)
    else:
        path.write_bytes(b"")
    before = (sha256(path), sha256(wal))
    cfg = refusing_config(tmp_path, server, stream, path)
    d = DaemonProcess(cfg, None, tmp_path / "refused.log")
    spawned.append(d)
    wait_for(lambda: d.proc.poll() is not None or "ready:" in d.output(), 20,
             what=lambda: f"the daemon to exit or be ready:\n{d.output()}")
    try:
        assert d.proc.poll() == EXIT_CONFIG, f"the daemon started:\n{d.output()}"
        assert str(path) in d.output(), d.output()
        assert wal.exists() and (sha256(path), sha256(wal)) == before, "the outbox was changed"
        assert_nothing_consumed(r, stream)
    finally:
        d.kill()


def test_second_daemon_on_an_outbox_in_use_is_refused(
        tmp_path: Path, spawned: list[DaemonProcess], server: Server, r: redis.Redis,
        stream: str) -> None:
    """A daemon runs on an outbox; a second `edged start` on the same outbox path (another
    listen port, another consumer name) must exit 78 saying the outbox is in use, and the
    first must go on accepting and forwarding."""
    path = tmp_path / "outbox"
    cfg, port = outbox_config(tmp_path, "first", server.url, {"path": str(path)})
    first = start(cfg, port, tmp_path / "first.log", spawned)
    payloads: dict[str, Any] = {}
    accepted = publish_numbered(first, stream, range(0, 10), 10, payloads)
    cfg2, _ = outbox_config(tmp_path, "second", server.url, {"path": str(path)})
    result = run_edged("start", "-c", str(cfg2), timeout=START_TIMEOUT)
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stdout, result.stderr)
    assert "in use" in result.stderr and str(path) in result.stderr, result.stderr
    accepted += publish_numbered(first, stream, range(10, 20), 10, payloads)
    wait_for(lambda: msgids_in(r, stream) >= set(accepted), 15, what="the first's entries")
    check_delivered(stream_entries(r, stream), accepted, payloads)
    assert first.proc.proc.poll() is None, first.proc.output()
