"""The outbox: local publishes over HTTP and the unix socket, message ids, the CLI through the
daemon, one bad stream holding back only itself, and what the outbox file and its pieces
promise on their own (README "Outbox"). The faults (Redis paused or killed, the daemon killed
mid-flush, a full outbox, a damaged file) are in test_outbox_faults.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from edged.config import parse_config
from edged.errors import ConfigError
from edged.events import Event
from edged.handlers.exec import _env
from edged.msgid import MonotonicUlid, timestamp_ms
from edged.outbox.service import decode_fields
from edged.outbox.store import OutboxStore, OutboxUnusable, Row
from edged.sharding import shard_for_key, shard_names
from edged.sizes import ByteSize
from tests.servers import Server, free_port
from tests.support import (
    DaemonProcess,
    run_edged,
    wait_for,
    write_config,
)
from tests.support import (
    test_env as env_with,
)


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def post(where: str, path: str, body: bytes,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST to ``host:port`` or to a unix socket path; (status, decoded JSON or text)."""
    if where.startswith("/"):
        conn: http.client.HTTPConnection = _UnixHTTP(where)
    else:
        host, port = where.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data.decode()


def ndjson(*docs: object) -> bytes:
    return b"".join(json.dumps(d).encode() + b"\n" for d in docs)


def metric(listen: str, name: str) -> float:
    for line in _metrics_text(listen).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def start_outbox_daemon(tmp_path: Path, url: str, spawned: list[DaemonProcess],
                        streams: list[dict[str, Any]] | None = None, name: str = "ob",
                        **outbox: Any) -> tuple[DaemonProcess, str, Path]:
    """A daemon with an outbox and a socket; (process, listen address, config path)."""
    listen = f"127.0.0.1:{free_port()}"
    outbox = {"path": str(tmp_path / f"{name}.outbox"), "socket": str(tmp_path / f"{name}.sock"),
              **outbox}
    cfg = write_config(tmp_path / f"{name}.toml", streams or [],
                       daemon={"consumer": name, "listen": listen}, outbox=outbox)
    d = DaemonProcess(cfg, url, tmp_path / f"{name}.log",
                      env=env_with(EDGED_TEST_REDIS=url, EDGED_TEST_CONSUMER=name))
    spawned.append(d)
    d.wait_ready()
    return d, listen, cfg


def entries(r: redis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in r.xrange(stream)]


# --------------------------------------------------------------------------- the daemon


def test_publishes_over_http_and_socket_reach_the_handler_with_their_msgid(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    """Entries POSTed on the listen address and on the socket are answered with their message
    ids, land in the stream in the order accepted with edged-msgid first, extra fields and the
    payload, and the handler sees the same id as Event.msgid."""
    d, listen, _ = start_outbox_daemon(
        tmp_path, server.url, spawned,
        streams=[{"stream": stream, "handler": "tests.handlers:record", "start-id": "0"}])
    status, first = post(listen, f"/v1/publish/{stream}?field=origin=tcp",
                         ndjson({"n": 0}, {"n": 1}))
    assert status == 202, first
    status, second = post(str(tmp_path / "ob.sock"), f"/v1/publish/{stream}",
                          ndjson({"n": 2}) + b"\n\n" + ndjson({"n": 3}))  # blank lines skipped
    assert status == 202, second
    assert first["accepted"] == 2 and second["accepted"] == 2
    ids = first["ids"] + second["ids"]
    assert ids == sorted(ids) and len(set(ids)) == 4, "message ids increase in accepted order"

    wait_for(lambda: r.llen(f"{stream}:msgids") == 4, 20, what="the handler ran 4 times")
    got = entries(r, stream)
    assert [json.loads(e[b"payload"])["n"] for e in got] == [0, 1, 2, 3]
    assert [e[b"edged-msgid"].decode() for e in got] == ids
    assert list(got[0]) == [b"edged-msgid", b"origin", b"payload"]
    assert got[0][b"origin"] == b"tcp" and b"origin" not in got[2]
    seen = sorted(m.decode() for m in r.lrange(f"{stream}:msgids", 0, -1))
    assert seen == ids
    assert abs(timestamp_ms(ids[0]) / 1000 - time.time()) < 600

    mode = os.stat(tmp_path / "ob.sock").st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    d.stop()
    assert not (tmp_path / "ob.sock").exists(), "the daemon removes its socket when it stops"


def test_bad_requests_are_refused_whole_and_say_what_is_wrong(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    _, listen, _ = start_outbox_daemon(tmp_path, server.url, spawned)
    path = f"/v1/publish/{stream}"
    status, reply = post(listen, path, ndjson({"ok": 1}) + b'{"broken":\n')
    assert status == 400 and "line 2" in reply["error"] and "nothing was accepted" in reply["error"]
    status, reply = post(listen, path + "?field=payload=x", ndjson({"ok": 1}))
    assert status == 400 and "'payload'" in reply["error"]
    status, reply = post(listen, path + "?field=edged-msgid=x", ndjson({"ok": 1}))
    assert status == 400 and "edged-msgid" in reply["error"]
    status, reply = post(listen, path + "?colour=red", ndjson({"ok": 1}))
    assert status == 400 and "'colour'" in reply["error"]
    status, reply = post(listen, path, b"\n\n")
    assert status == 400 and "no entry" in reply["error"]
    status, reply = post(listen, "/v1/publish/", ndjson({"ok": 1}))
    assert status == 400
    status, reply = post(listen, path, b"\xff\xfe\n")
    assert status == 400 and "line 1" in reply["error"]
    # Chunked bodies are refused rather than guessed at.
    status, reply = post(listen, path, ndjson({"ok": 1}),
                         headers={"Transfer-Encoding": "chunked"})
    assert status == 411
    # GET on the publish path.
    host, port = listen.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path)
    assert conn.getresponse().status == 405
    conn.close()
    # A browser (it sends Origin) may not publish; nor may a head past 8 KiB or 100 001 lines.
    status, reply = post(listen, path, ndjson({"ok": 1}), headers={"Origin": "http://evil.test"})
    assert status == 403
    status, reply = post(listen, path, ndjson({"ok": 1}), headers={"X-Big": "x" * 9000})
    assert status == 431
    status, reply = post(listen, path, b"1\n" * 100_001)
    assert status == 400 and "at most 100000 lines" in reply["error"]
    assert metric(listen, "edged_outbox_accepted_total") == 0
    assert r.exists(stream) == 0, "nothing of a refused request reached Redis"


def test_a_daemon_without_an_outbox_takes_no_publishes(
        server: Server, stream: str, tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    listen = f"127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "c.toml", [{"stream": stream, "handler": "edged.handlers:log"}],
                       daemon={"consumer": "noout", "listen": listen})
    d = DaemonProcess(cfg, server.url, tmp_path / "d.log")
    spawned.append(d)
    d.wait_ready()
    status, reply = post(listen, f"/v1/publish/{stream}", ndjson({"a": 1}))
    assert status == 404 and "[outbox]" in reply


def test_a_sharded_stream_takes_the_shard_of_the_key(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    _, listen, _ = start_outbox_daemon(
        tmp_path, server.url, spawned,
        streams=[{"stream": stream, "handler": "edged.handlers:log", "shards": 4,
                  "concurrency": 4}])
    status, reply = post(listen, f"/v1/publish/{stream}?key=device-7",
                         ndjson(*({"n": i} for i in range(10))))
    assert status == 202, reply
    shard = shard_names(stream, 4)[shard_for_key("device-7", 4)]
    assert reply["shards"] == [shard] * 10
    wait_for(lambda: r.xlen(shard) == 10, 20, what="all ten in the key's shard")
    assert [json.loads(e[b"payload"])["n"] for e in entries(r, shard)] == list(range(10))


def test_a_host_that_only_produces_learns_the_shards_from_its_outbox_table(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    """No [[streams]]: `[outbox] shards` says the stream has 3 shards, so `key=` lands where
    the consumers (elsewhere) read, not in a plain key nobody reads."""
    _, listen, _ = start_outbox_daemon(tmp_path, server.url, spawned, shards={stream: 3})
    status, reply = post(listen, f"/v1/publish/{stream}?key=k-9", ndjson({"n": 1}, {"n": 2}))
    assert status == 202, reply
    shard = shard_names(stream, 3)[shard_for_key("k-9", 3)]
    assert reply["shards"] == [shard, shard]
    wait_for(lambda: r.xlen(shard) == 2, 20, what="both in the key's shard")
    assert r.exists(stream) == 0


def test_a_batch_redis_half_refuses_goes_in_whole_or_not_at_all(
        tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    """maxmemory leaves room for about half of a 200-entry batch: Redis refuses the batch
    (OOM), and nothing of it is written; raised, the batch goes in once, whole and in order.
    A plain pipeline would have written the first half, then all of it again on the retry."""
    own = Server(port=free_port(), data_dir=tmp_path / "srv").start()
    client = own.client()
    try:
        d, listen, _ = start_outbox_daemon(tmp_path, own.url, spawned, batch=200)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 1_000_000)
        client.config_set("maxmemory-policy", "noeviction")
        body = ndjson(*({"n": i, "pad": "x" * 10_000} for i in range(200)))
        status, reply = post(listen, "/v1/publish/oom", body)
        assert status == 202, reply
        d.wait_output("cannot forward to stream oom")
        assert client.exists("oom") == 0, "part of a refused batch was written"
        client.config_set("maxmemory", 0)
        wait_for(lambda: client.exists("oom") and client.xlen("oom") == 200, 30,
                 what="the batch forwarded once the memory is there")
        assert [json.loads(e[b"payload"])["n"] for e in entries(client, "oom")] == list(range(200))
    finally:
        client.close()
        own.stop()


def test_one_refused_stream_holds_back_only_itself(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    """A stream Redis refuses (WRONGTYPE here) keeps its entries in the outbox, in order, while
    the other streams' entries go on; `edged status` and /metrics show them waiting; once the
    key is fixed they flow. Nothing is dropped."""
    bad, good = f"{stream}:bad", f"{stream}:good"
    r.set(bad, "not a stream")
    _, listen, cfg = start_outbox_daemon(tmp_path, server.url, spawned, batch=2)
    assert post(listen, f"/v1/publish/{bad}", ndjson({"n": 0}, {"n": 1}, {"n": 2}))[0] == 202
    assert post(listen, f"/v1/publish/{good}", ndjson(*({"n": i} for i in range(5))))[0] == 202
    wait_for(lambda: r.xlen(good) == 5, 20, what="the good stream's entries forwarded")
    wait_for(lambda: metric(listen, "edged_outbox_entries") == 3, 10, what="3 entries waiting")
    assert metric(listen, 'edged_outbox_stream_blocked{stream="' + bad + '"}') == 1

    def outbox_in_status() -> Any:
        out = run_edged("status", "-c", str(cfg), "--url", server.url, "--json")
        daemons = json.loads(out.stdout)["daemons"] if out.returncode in (0, 1) else []
        return [d.get("outbox") for d in daemons if d["consumer"] == "ob"] == [3]

    wait_for(outbox_in_status, 20, what="edged status shows 3 entries in the outbox")
    r.delete(bad)
    wait_for(lambda: r.exists(bad) and r.xlen(bad) == 3, 30, what="the fixed stream catches up")
    assert [json.loads(e[b"payload"])["n"] for e in entries(r, bad)] == [0, 1, 2]
    wait_for(lambda: metric(listen, "edged_outbox_entries") == 0, 10, what="outbox empty")


def test_edged_publish_goes_through_the_daemon_when_one_runs(
        server: Server, r: redis.Redis, stream: str, tmp_path: Path,
        spawned: list[DaemonProcess]) -> None:
    """With [outbox] in the config and its daemon up, `edged publish` needs no Redis at all:
    the config it is given names no reachable Redis, and the entries still arrive."""
    d, _, cfg = start_outbox_daemon(tmp_path, server.url, spawned)
    out = run_edged("publish", stream, "-", "-c", str(cfg), "-f", "k=v",
                    input='{"a": 1}\n{"a": 2}\n')
    assert out.returncode == 0, out.stderr
    msgids = out.stdout.split()
    assert len(msgids) == 2
    out = run_edged("publish", stream, '{"a": 3}', "-c", str(cfg), "--via-daemon", "--json")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["accepted"] == 1 and reply["via"].startswith("unix:")
    msgids += reply["msgids"]
    wait_for(lambda: r.xlen(stream) == 3, 20, what="three entries forwarded")
    got = entries(r, stream)
    assert [e[b"edged-msgid"].decode() for e in got] == msgids
    assert got[0][b"k"] == b"v"

    out = run_edged("publish", stream, '{"a": 4}', "-c", str(cfg), "--via-daemon", "--maxlen", "9")
    assert out.returncode == 2 and "--direct" in out.stderr
    d.stop()
    out = run_edged("publish", stream, '{"a": 5}', "-c", str(cfg), "--via-daemon")
    assert out.returncode == 69 and "no daemon takes publishes" in out.stderr, out.stderr
    assert r.xlen(stream) == 3


def test_the_socket_path_is_checked_before_anything_is_consumed(
        server: Server, stream: str, tmp_path: Path) -> None:
    """A leftover socket file is replaced; a regular file at the path is left alone and stops
    the daemon."""
    squatter = tmp_path / "ob.sock"
    squatter.write_text("mine")
    cfg = write_config(tmp_path / "c.toml", [], daemon={"consumer": "sq"},
                       outbox={"path": str(tmp_path / "o"), "socket": str(squatter)})
    out = run_edged("start", "-c", str(cfg), "--url", server.url)
    assert out.returncode == 1 and "is not a socket" in out.stderr + out.stdout
    assert squatter.read_text() == "mine"


def test_a_stale_socket_file_is_replaced(server: Server, r: redis.Redis, stream: str,
                                         tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "ob.sock"))
    stale.close()  # the file stays, nobody listens
    _, _, _ = start_outbox_daemon(tmp_path, server.url, spawned)
    assert post(str(tmp_path / "ob.sock"), f"/v1/publish/{stream}", ndjson({"a": 1}))[0] == 202
    wait_for(lambda: r.xlen(stream) == 1, 20, what="the entry forwarded")


# --------------------------------------------------------------------------- pieces on their own


def test_message_ids_strictly_increase_even_when_the_clock_steps_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ids = MonotonicUlid()
    made = [ids.new() for _ in range(5000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(len(m) == 26 for m in made)
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now - 10**12)  # 1000 s back
    later = [ids.new() for _ in range(10)]
    assert later == sorted(later) and later[0] > made[-1]
    # A new run (a new generator) whose clock is behind still starts above the last id made.
    restarted = MonotonicUlid()
    restarted.start_after(later[-1])
    assert restarted.new() > later[-1]


def test_event_msgid_and_the_exec_environment() -> None:
    event = Event(stream="s", group="g", id="1-0", payload=None, delivery=1,
                  fields={"edged-msgid": b"01ARZ3NDEKTSV4RRFFQ69G5FAV", "payload": b"{}"})
    assert event.msgid == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert _env(event)["EDGED_MSGID"] == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    plain = Event(stream="s", group="g", id="1-0", fields={}, payload=None, delivery=1)
    assert plain.msgid is None and "EDGED_MSGID" not in _env(plain)


def test_sizes_and_outbox_config_errors_name_the_field() -> None:
    assert ByteSize.parse("1GiB").bytes == 2**30
    assert ByteSize.parse("500MB").bytes == 500 * 10**6
    assert ByteSize.parse(4096).bytes == 4096
    assert str(ByteSize.parse("512MiB")) == "512MiB"
    cases = {
        ("max-bytes", "12 apples"): "$.outbox.max-bytes",
        ("socket-mode", "rw-rw----"): "$.outbox.socket-mode",
        ("socket", "relative.sock"): "$.outbox.socket",
        ("batch", 5000): "$.outbox.batch",
        ("max-entries", 0): "$.outbox.max-entries",
    }
    for (key, value), where in cases.items():
        with pytest.raises(ConfigError, match=r"\$\.outbox\.") as caught:
            parse_config({"outbox": {key: value}})
        assert where in str(caught.value), (key, caught.value)
    with pytest.raises(ConfigError, match="nothing could publish"):
        parse_config({"daemon": {"listen": ""}, "outbox": {}})
    with pytest.raises(ConfigError, match="nothing could publish"):
        parse_config({"outbox": {"http": False}})
    with pytest.raises(ConfigError, match=r"reachable from other hosts.*\$\.outbox\.http"):
        parse_config({"daemon": {"listen": "0.0.0.0:9478"}, "outbox": {}})
    parse_config({"daemon": {"listen": "0.0.0.0:9478"},  # metrics for all, publish on the socket
                  "outbox": {"http": False, "socket": "/run/edged/publish.sock"}})
    with pytest.raises(ConfigError, match=r"\$\.outbox\.shards"):
        parse_config({"outbox": {"shards": {"telemetry": 0}}})


def _rows(n: int, stream: str = "s", start: int = 0) -> list[Row]:
    return [Row(stream, f"id{start + i:05d}", 1000 + i, msgspec.msgpack.encode(
        {"edged-msgid": f"id{start + i:05d}".encode(), "payload": b"x" * 10})) for i in range(n)]


def test_the_store_keeps_order_depth_and_limits_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    store = OutboxStore(path, max_entries=10, max_bytes=10_000)
    store.open()
    store.append(_rows(4, "a") + _rows(2, "b", start=4))
    assert [s.msgid for s in store.oldest(3)] == ["id00000", "id00001", "id00002"]
    assert [s.stream for s in store.oldest(10, skip=["a"])] == ["b", "b"]
    assert store.fits(5, 10) is not None and "max-entries 10" in str(store.fits(5, 10))
    assert store.fits(4, 10) is None
    assert store.fits(1, 10_000) is not None
    first = store.oldest(2)
    store.remove([s.seq for s in first])
    assert store.depth.entries == 4 and store.depth.oldest_ms == 1002
    store.close()

    again = OutboxStore(path, max_entries=10, max_bytes=10_000)
    again.open()
    assert again.depth.entries == 4
    assert again.last_msgid == "id00005", "the newest id made is kept for the next run"
    assert [decode_fields(s.fields)["edged-msgid"] for s in again.oldest(10)] == [
        b"id00002", b"id00003", b"id00004", b"id00005"]
    again.remove([s.seq for s in again.oldest(10)])
    assert again.depth.entries == 0 and again.depth.bytes == 0 and again.depth.oldest_ms is None
    again.close()


def test_one_outbox_file_is_used_by_one_daemon_at_a_time(tmp_path: Path) -> None:
    first = OutboxStore(tmp_path / "outbox", 10, 10_000)
    first.open()
    second = OutboxStore(tmp_path / "outbox", 10, 10_000)
    with pytest.raises(OutboxUnusable, match="in use by another daemon"):
        second.open()
    first.close()
    second.open()  # free again once the first let go
    second.close()



def test_a_stop_while_redis_hangs_is_bounded_and_keeps_the_entries(
        tmp_path: Path, spawned: list[DaemonProcess]) -> None:
    """Redis paused (SIGSTOP) with a batch in flight: SIGTERM still ends the daemon with exit 0
    (the batch in flight gets its settle budget, not the socket timeout), and the entries,
    still in the file, arrive after a restart."""
    own = Server(port=free_port(), data_dir=tmp_path / "srv").start()
    try:
        d, listen, cfg = start_outbox_daemon(tmp_path, own.url, spawned)
        os.kill(own.pid, signal.SIGSTOP)
        status, reply = post(listen, "/v1/publish/kept", ndjson(*({"n": i} for i in range(10))))
        assert status == 202, reply
        wait_for(lambda: "edged_outbox_entries 10.0" in _metrics_text(listen), 10,
                 what="10 entries waiting")
        d.signal(signal.SIGTERM)
        assert d.wait_exit(timeout=30) == 0, d.output()
        os.kill(own.pid, signal.SIGCONT)
        again = DaemonProcess(cfg, own.url, tmp_path / "again.log")
        spawned.append(again)
        client = own.client()
        wait_for(lambda: client.xlen("kept") >= 10, 30, what="the kept entries forwarded")
        got = [json.loads(e[b"payload"])["n"] for e in entries(client, "kept")]
        assert sorted(set(got)) == list(range(10))
        client.close()
    finally:
        os.kill(own.pid, signal.SIGCONT)
        own.stop()


def _metrics_text(listen: str) -> str:
    host, port = listen.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def test_a_drained_outbox_gives_its_space_back(tmp_path: Path) -> None:
    """After an outage's backlog is forwarded, the file and its WAL shrink again (every free
    page is vacuumed, the WAL truncated), rather than keeping the backlog's size for ever."""
    store = OutboxStore(tmp_path / "outbox", 10**6, 10**10)
    store.open()
    store.append([Row("s", f"{i}", i, b"x" * 500) for i in range(20_000)])
    full = os.path.getsize(tmp_path / "outbox") + os.path.getsize(tmp_path / "outbox-wal")
    assert full > 10_000_000
    store.remove([s.seq for s in store.oldest(20_000)])
    drained = os.path.getsize(tmp_path / "outbox") + os.path.getsize(tmp_path / "outbox-wal")
    assert drained < 200_000, (full, drained)
    store.close()


def _outbox_left_by_a_crash(tmp_path: Path, commits: int) -> Path:
    """An outbox whose ``commits`` transactions (100 entries each) are all still in its WAL:
    the writing process ends without closing it, as a SIGKILL would."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from edged.outbox.store import OutboxStore, Row\n"
        "store = OutboxStore(Path(sys.argv[1]), 10**6, 10**10)\n"
        "store.open()\n"
        f"for k in range({commits}):\n"
        "    store.append([Row('s', f'{k}-{i}', i, b'x' * 300) for i in range(100)])\n"
        "os._exit(0)\n"
    )
    path = tmp_path / "outbox"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env_with())
    return path


def test_a_torn_last_transaction_is_dropped_but_earlier_damage_stops_the_outbox(
        tmp_path: Path) -> None:
    """A crash can tear only the transaction whose fsync never returned (its publish was never
    answered): damage in the WAL's last frame opens with the earlier entries. Damage in an
    earlier frame, with committed transactions after it, would lose answered entries: the
    outbox refuses to open and leaves the files as they are."""
    torn = _outbox_left_by_a_crash(tmp_path / "torn", commits=3)
    wal = torn.with_name("outbox-wal")
    data = bytearray(wal.read_bytes())
    data[-100:-50] = b"\xff" * 50  # inside the last frame's page
    wal.write_bytes(bytes(data))
    store = OutboxStore(torn, 10**6, 10**10)
    store.open()
    assert store.depth.entries == 200  # the torn transaction is gone, the two before it kept
    store.close()

    damaged = _outbox_left_by_a_crash(tmp_path / "damaged", commits=3)
    wal = damaged.with_name("outbox-wal")
    data = bytearray(wal.read_bytes())
    data[5000:5050] = b"\xff" * 50  # the first transaction's frames
    wal.write_bytes(bytes(data))
    with pytest.raises(OutboxUnusable, match="later committed transaction"):
        OutboxStore(damaged, 10**6, 10**10).open()
    assert wal.read_bytes() == bytes(data)
