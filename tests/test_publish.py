"""`edged publish`: entries in edged's shape, clear refusals, exit codes."""

from __future__ import annotations

import json

import redis

from tests.servers import Server
from tests.support import run_edged


def publish(server: Server, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return run_edged("publish", *args, "--url", server.url, input=input)


def test_one_json_argument(server: Server, r: redis.Redis, stream: str) -> None:
    """One JSON argument: one entry whose only field is `payload`, the compact JSON; the id is
    printed."""
    res = publish(server, stream, '{ "a" : 1, "b": [true, null, "x"] }')
    assert res.returncode == 0, res.stderr
    ((entry_id, fields),) = r.xrange(stream)
    assert res.stdout.split() == [entry_id.decode()]
    assert fields == {b"payload": b'{"a":1,"b":[true,null,"x"]}'}


def test_stdin_lines_in_order_and_fields(server: Server, r: redis.Redis, stream: str) -> None:
    """`-` with three JSON lines: three entries in order, ids printed in that order; --field
    k=v is added to every entry."""
    res = publish(server, stream, "-", "--field", "source=test", "--field", "k=a=b",
                  input='{"n": 1}\n\n[2]\n"three"\n')
    assert res.returncode == 0, res.stderr
    entries = r.xrange(stream)
    assert res.stdout.split() == [eid.decode() for eid, _ in entries]
    assert [f for _, f in entries] == [
        {b"payload": b'{"n":1}', b"source": b"test", b"k": b"a=b"},
        {b"payload": b"[2]", b"source": b"test", b"k": b"a=b"},
        {b"payload": b'"three"', b"source": b"test", b"k": b"a=b"},
    ]


def test_json_output(server: Server, r: redis.Redis, stream: str) -> None:
    """--json prints {"stream": ..., "ids": [...]} with the new ids."""
    res = publish(server, stream, "-", "--json", input="1\n2\n")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out == {"stream": stream, "ids": [eid.decode() for eid, _ in r.xrange(stream)]}
    assert len(out["ids"]) == 2


def test_maxlen_trims_approximately(server: Server, r: redis.Redis, stream: str) -> None:
    """2000 entries published with --maxlen 10: the stream is trimmed (approximately, so at
    least 10 remain but far fewer than 2000), and the newest entry is kept."""
    res = publish(server, stream, "-", "--maxlen", "10",
                  input="".join(f'{{"n":{n}}}\n' for n in range(2000)))
    assert res.returncode == 0, res.stderr
    ids = res.stdout.split()
    assert len(ids) == 2000
    length = r.xlen(stream)
    assert 10 <= length < 2000
    assert length <= 1000
    ((last_id, last),) = r.xrevrange(stream, count=1)
    assert last_id.decode() == ids[-1]
    assert last == {b"payload": b'{"n":1999}'}


def test_invalid_json_argument(server: Server, r: redis.Redis, stream: str) -> None:
    """Invalid JSON argument: exit 2, the message says invalid JSON, nothing is published."""
    r.xadd(stream, {"payload": b"{}"})
    res = publish(server, stream, "{not json")
    assert res.returncode == 2
    assert "invalid JSON" in res.stderr
    assert "Traceback" not in res.stderr
    assert r.xlen(stream) == 1


def test_invalid_stdin_line(server: Server, r: redis.Redis, stream: str) -> None:
    """Line 2 of stdin is not JSON: exit 2, the message names line 2, nothing is published (not
    even line 1)."""
    res = publish(server, stream, "-", input='{"ok": 1}\n{oops\n{"ok": 3}\n')
    assert res.returncode == 2
    assert "line 2" in res.stderr
    assert "Traceback" not in res.stderr
    assert r.xlen(stream) == 0


def test_unreachable_redis(stream: str) -> None:
    """Redis cannot be reached: exit 69 with a one-line message naming Redis, no traceback."""
    res = run_edged("publish", stream, "{}", "--url", "redis://127.0.0.1:1/0")
    assert res.returncode == 69, res.stderr
    assert "Traceback" not in res.stderr
    assert "unavailable" in res.stderr.lower()
    assert "127.0.0.1:1" in res.stderr
    assert res.stdout == ""


def test_key_of_another_type_is_a_clear_failure(server: Server, r: redis.Redis, stream: str) -> None:
    """The stream name holds a string: exit 1 with one line naming the WRONGTYPE error, no
    traceback, and the key is untouched."""
    r.set(stream, "not a stream")
    res = publish(server, stream, "{}")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "WRONGTYPE" in res.stderr
    assert r.get(stream) == b"not a stream"
