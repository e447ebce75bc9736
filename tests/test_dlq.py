"""`edged dlq list|show|replay|purge` (README "Dead letters").

Dead-letter entries are made the real way: a StreamConsumer whose handler raises Reject. The
commands then run as the operator runs them, `edged dlq ... --url`, and their effect is checked
from Redis itself.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anyio
import msgspec
import redis

from edged import Event, Reject
from tests.servers import Server
from tests.support import Consuming, edged_client, make_consumer, run_edged, until, write_config

BLOB = b"\xff\x00not utf-8"


def dlq(server: Server, *args: str):  # type: ignore[no-untyped-def]
    return run_edged("dlq", *args, "--url", server.url)


def dead_letter(server: Server, r: redis.Redis, stream: str, n: int, **cfg: Any) -> list[str]:
    """Publish ``n`` entries (payload {"n": i}, a text field and a binary one) and have a
    consumer reject each; returns the original ids. ``cfg`` are StreamConfig fields."""
    ids = [
        r.xadd(stream, {"payload": msgspec.json.encode({"n": i}), "source": b"test", "blob": BLOB}).decode()
        for i in range(n)
    ]

    async def handler(event: Event) -> None:
        raise Reject(f"bad {event.payload['n']}")

    async def go() -> None:
        client = edged_client(server.url, socket_timeout=30)
        try:
            consumer = make_consumer(client, stream, handler, concurrency=1, **cfg)
            async with Consuming(consumer):
                await until(lambda: consumer.stats.dead_lettered == n, what=f"{n} dead-lettered")
        finally:
            await client.aclose()

    anyio.run(go)
    return ids


def dead_ids(r: redis.Redis, dead: str) -> list[str]:
    return [eid.decode() for eid, _ in r.xrange(dead)]


def original_fields(i: int) -> dict[bytes, bytes]:
    return {b"payload": msgspec.json.encode({"n": i}), b"source": b"test", b"blob": BLOB}


# --------------------------------------------------------------------------- list


def test_list_json_and_text(server: Server, r: redis.Redis, stream: str) -> None:
    """Three entries rejected by the handler, then `dlq list --json` and `dlq list`.

    Must hold: JSON has one object per entry, oldest first, with the dead id, original stream,
    group, original id, reason, delivery count 1, consumer, failed-at and the original fields
    (text as text, the non-UTF-8 field as {"base64": ...}), no edged-* field among them, and no
    next page; the text table shows every dead id and reason and the count."""
    ids = dead_letter(server, r, stream, 3)
    dead = dead_ids(r, f"{stream}:dead")
    res = dlq(server, "list", stream, "--json")
    assert res.returncode == 0, res.stderr
    page = json.loads(res.stdout)
    assert page["dead_letter"] == f"{stream}:dead"
    assert page["length"] == 3
    assert page["next_after"] is None
    assert [e["dead_id"] for e in page["entries"]] == dead
    for i, entry in enumerate(page["entries"]):
        assert entry["stream"] == stream
        assert entry["group"] == "edged"
        assert entry["original_id"] == ids[i]
        assert entry["reason"] == f"rejected: bad {i}"
        assert entry["deliveries"] == 1
        assert entry["consumer"] == "c1"
        assert entry["failed_at"]
        assert entry["age_seconds"] >= 0
        assert entry["fields"] == {
            "payload": f'{{"n":{i}}}',
            "source": "test",
            "blob": {"base64": base64.b64encode(BLOB).decode()},
        }

    res = dlq(server, "list", stream)
    assert res.returncode == 0, res.stderr
    for i, dead_id in enumerate(dead):
        assert dead_id in res.stdout
        assert f"rejected: bad {i}" in res.stdout
        assert ids[i] in res.stdout
    assert f"3 of 3 entries in {stream}:dead" in res.stdout


def test_list_pages_with_count_and_after(server: Server, r: redis.Redis, stream: str) -> None:
    """Five dead entries listed two at a time: `--count 2`, then `--after` the page's
    next_after. Must hold: pages of 2, 2, 1 entries that together are all five in order, with
    next_after set on all but the last page; the text output names the next --after."""
    dead_letter(server, r, stream, 5)
    dead = dead_ids(r, f"{stream}:dead")
    seen: list[str] = []
    after: list[str] = []
    sizes = []
    while True:
        res = dlq(server, "list", stream, "--count", "2", "--json", *after)
        assert res.returncode == 0, res.stderr
        page = json.loads(res.stdout)
        sizes.append(len(page["entries"]))
        seen += [e["dead_id"] for e in page["entries"]]
        if page["next_after"] is None:
            break
        assert page["next_after"] == seen[-1]
        after = ["--after", page["next_after"]]
    assert sizes == [2, 2, 1]
    assert seen == dead

    res = dlq(server, "list", stream, "--count", "2")
    assert res.returncode == 0, res.stderr
    assert f"next page: --after {dead[1]}" in res.stdout
    assert dead[2] not in res.stdout


def test_list_empty_and_bad_after(server: Server, stream: str) -> None:
    """A stream that never dead-lettered anything: list succeeds with no entries (text and
    JSON); a malformed --after is a usage error (exit 2) naming the option."""
    res = dlq(server, "list", stream, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        "dead_letter": f"{stream}:dead", "length": 0, "entries": [], "next_after": None,
    }
    res = dlq(server, "list", stream)
    assert res.returncode == 0, res.stderr
    assert "no dead-letter entries" in res.stdout
    res = dlq(server, "list", stream, "--after", "yesterday")
    assert res.returncode == 2
    assert "--after" in res.stderr


# --------------------------------------------------------------------------- show


def test_show_one_entry(server: Server, r: redis.Redis, stream: str) -> None:
    """Two dead entries; `dlq show` of the second. Must hold: --json is exactly that entry as
    `list --json` gives it (same fields); the text shows its metadata and original fields and
    nothing of the first entry."""
    ids = dead_letter(server, r, stream, 2)
    dead = dead_ids(r, f"{stream}:dead")
    res = dlq(server, "show", stream, dead[1], "--json")
    assert res.returncode == 0, res.stderr
    entry = json.loads(res.stdout)
    listed = json.loads(dlq(server, "list", stream, "--json").stdout)["entries"][1]
    entry.pop("age_seconds")
    listed.pop("age_seconds")
    assert entry == listed

    res = dlq(server, "show", stream, dead[1])
    assert res.returncode == 0, res.stderr
    for text in (dead[1], ids[1], "rejected: bad 1", "c1", '{"n":1}', "test",
                 base64.b64encode(BLOB).decode()):
        assert text in res.stdout
    assert dead[0] not in res.stdout


def test_show_missing_or_malformed_id(server: Server, r: redis.Redis, stream: str) -> None:
    """`dlq show` of an id not in the dead-letter stream exits 1 naming the id; a malformed id
    exits 2; neither prints a traceback."""
    dead_letter(server, r, stream, 1)
    res = dlq(server, "show", stream, "1-1")
    assert res.returncode == 1
    assert "1-1" in res.stderr
    assert "Traceback" not in res.stderr
    res = dlq(server, "show", stream, "latest")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr


# --------------------------------------------------------------------------- replay


def test_replay_selected_ids(server: Server, r: redis.Redis, stream: str) -> None:
    """Three dead entries; `dlq replay --id first --id third --json`.

    Must hold: the output maps each to a new id; the original stream has new entries at those
    ids with exactly the original fields (bytes, the binary one too, no edged-* field); both
    are gone from the dead-letter stream and the second is still there, untouched."""
    dead_letter(server, r, stream, 3)
    dead = dead_ids(r, f"{stream}:dead")
    before = r.xlen(stream)
    res = dlq(server, "replay", stream, "--id", dead[0], "--id", dead[2], "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["failed"] == []
    assert [(x["dead_id"], x["stream"]) for x in out["replayed"]] == [(dead[0], stream), (dead[2], stream)]
    assert r.xlen(stream) == before + 2
    for x, i in zip(out["replayed"], (0, 2), strict=True):
        ((new_id, fields),) = r.xrange(stream, min=x["new_id"], max=x["new_id"])
        assert new_id.decode() == x["new_id"]
        assert fields == original_fields(i)
    assert dead_ids(r, f"{stream}:dead") == [dead[1]]


def test_replay_all_text(server: Server, r: redis.Redis, stream: str) -> None:
    """Three dead entries; `dlq replay --all`. Must hold: every entry is back in the original
    stream with its original fields, in dead-letter order; the text names each new id; the
    dead-letter stream is empty."""
    dead_letter(server, r, stream, 3)
    dead = dead_ids(r, f"{stream}:dead")
    res = dlq(server, "replay", stream, "--all")
    assert res.returncode == 0, res.stderr
    replayed = r.xrange(stream)[-3:]
    assert [fields for _, fields in replayed] == [original_fields(i) for i in range(3)]
    for (new_id, _), dead_id in zip(replayed, dead, strict=True):
        assert new_id.decode() in res.stdout
        assert dead_id in res.stdout
    assert r.xlen(f"{stream}:dead") == 0


def test_replayed_entries_are_consumed_again(server: Server, r: redis.Redis, stream: str) -> None:
    """One entry rejected once, replayed, then consumed by a handler that accepts it.

    Must hold: the handler sees the original payload and fields (no edged-* metadata) and acks
    it; nothing is dead-lettered again."""
    dead_letter(server, r, stream, 1)
    res = dlq(server, "replay", stream, "--all")
    assert res.returncode == 0, res.stderr
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    async def go() -> None:
        client = edged_client(server.url, socket_timeout=30)
        try:
            # Same group, so it starts after the entries it already handled.
            consumer = make_consumer(client, stream, handler, concurrency=1)
            async with Consuming(consumer):
                await until(lambda: consumer.stats.acked == 1, what="the replayed entry acked")
        finally:
            await client.aclose()

    anyio.run(go)
    assert [e.payload for e in seen] == [{"n": 0}]
    assert seen[0].fields == {k.decode(): v for k, v in original_fields(0).items()}
    assert r.xlen(f"{stream}:dead") == 0


def test_replay_missing_id_fails_cleanly(server: Server, r: redis.Redis, stream: str) -> None:
    """`dlq replay --id <present> --id <absent>`: exit 1, stderr names the absent id, the present
    one is replayed and removed, nothing is published for the absent one. Replaying the same
    id again then fails the same way and publishes nothing."""
    dead_letter(server, r, stream, 1)
    (present,) = dead_ids(r, f"{stream}:dead")
    absent = "1-1"
    length = r.xlen(stream)
    res = dlq(server, "replay", stream, "--id", present, "--id", absent)
    assert res.returncode == 1
    assert absent in res.stderr
    assert present not in res.stderr
    assert "Traceback" not in res.stderr
    assert present in res.stdout
    assert r.xlen(stream) == length + 1
    assert r.xlen(f"{stream}:dead") == 0

    res = dlq(server, "replay", stream, "--id", present, "--json")
    assert res.returncode == 1
    assert present in res.stderr
    assert json.loads(res.stdout)["failed"][0]["dead_id"] == present
    assert r.xlen(stream) == length + 1


def test_replay_needs_a_selection(server: Server, r: redis.Redis, stream: str) -> None:
    """`dlq replay` with neither --id nor --all, or with both, is a usage error (exit 2) and
    changes nothing."""
    dead_letter(server, r, stream, 1)
    (dead_id,) = dead_ids(r, f"{stream}:dead")
    length = r.xlen(stream)
    for args in ((), ("--all", "--id", dead_id)):
        res = dlq(server, "replay", stream, *args)
        assert res.returncode == 2, res.stderr
        assert "--all" in res.stderr
    assert r.xlen(stream) == length
    assert dead_ids(r, f"{stream}:dead") == [dead_id]


# --------------------------------------------------------------------------- purge


def test_purge_without_yes_deletes_nothing(server: Server, r: redis.Redis, stream: str) -> None:
    """`dlq purge` without --yes, for all entries, for --id and for --before: each exits 2 with a
    message saying to add --yes, and every dead entry is still there."""
    dead_letter(server, r, stream, 2)
    dead = dead_ids(r, f"{stream}:dead")
    for args in ((), ("--id", dead[0]), ("--before", dead[1])):
        res = dlq(server, "purge", stream, *args)
        assert res.returncode == 2, res.stderr
        assert "--yes" in res.stderr
        assert dead_ids(r, f"{stream}:dead") == dead


def test_purge_with_yes(server: Server, r: redis.Redis, stream: str) -> None:
    """Five dead entries. `purge --id <2nd> --yes` deletes that one; `purge --before <4th> --yes`
    deletes those older than the 4th; `purge --yes --json` deletes the rest. Must hold: after
    each, exactly the expected entries remain and the reported count matches."""
    dead_letter(server, r, stream, 5)
    dead = dead_ids(r, f"{stream}:dead")
    res = dlq(server, "purge", stream, "--id", dead[1], "--yes")
    assert res.returncode == 0, res.stderr
    assert "deleted 1 " in res.stdout
    assert dead_ids(r, f"{stream}:dead") == [dead[0], dead[2], dead[3], dead[4]]

    res = dlq(server, "purge", stream, "--before", dead[3], "--yes")
    assert res.returncode == 0, res.stderr
    assert "deleted 2 " in res.stdout
    assert dead_ids(r, f"{stream}:dead") == [dead[3], dead[4]]

    res = dlq(server, "purge", stream, "--yes", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"dead_letter": f"{stream}:dead", "deleted": 2, "missing": []}
    assert r.xlen(f"{stream}:dead") == 0
    assert r.xlen(stream) == 5  # the original stream is never touched


def test_purge_missing_id(server: Server, r: redis.Redis, stream: str) -> None:
    """`purge --id <present> --id <absent> --yes`: the present one is deleted, exit 1 and stderr
    names the absent id."""
    dead_letter(server, r, stream, 2)
    dead = dead_ids(r, f"{stream}:dead")
    res = dlq(server, "purge", stream, "--id", dead[0], "--id", "1-1", "--yes")
    assert res.returncode == 1
    assert "1-1" in res.stderr
    assert dead_ids(r, f"{stream}:dead") == [dead[1]]


# --------------------------------------------------------------------------- dead-letter name


def test_dead_letter_stream_from_config_or_option(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path
) -> None:
    """The stream's [[streams]] entry sets dead-letter = "<stream>:custom" and the consumer
    dead-letters there. Must hold: `list -c FILE` reads that stream; without the config it reads
    "<stream>:dead" (empty); `--dead-letter` overrides both; replay with the config works."""
    custom = f"{stream}:custom"
    dead_letter(server, r, stream, 1, dead_letter=custom)
    config = write_config(tmp_path / "edged.toml",
                          [{"stream": stream, "handler": "x:y", "dead-letter": custom}])
    res = dlq(server, "list", stream, "-c", str(config), "--json")
    assert res.returncode == 0, res.stderr
    page = json.loads(res.stdout)
    assert page["dead_letter"] == custom
    assert len(page["entries"]) == 1

    res = dlq(server, "list", stream, "--json")
    assert json.loads(res.stdout)["dead_letter"] == f"{stream}:dead"
    assert json.loads(res.stdout)["entries"] == []

    res = dlq(server, "list", stream, "--dead-letter", custom, "--json")
    assert json.loads(res.stdout)["length"] == 1

    res = dlq(server, "replay", stream, "-c", str(config), "--all", "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["replayed"]) == 1
    assert r.xlen(custom) == 0


def test_replay_of_a_wide_binary_entry_is_byte_for_byte(
    server: Server, r: redis.Redis, stream: str
) -> None:
    """An entry of 12 000 fields, with a non-UTF-8 name, a name given twice and a field named
    like edged's own `edged-reason`, is dead-lettered (malformed: it cannot become an Event), then
    `dlq replay --all`. Must hold: the replayed entry's fields are the original's exactly, in
    order (nothing stripped but edged's metadata), and the dead-letter stream is empty."""
    flat = [b"payload", b"{}", b"\xffbin", b"1", b"dup", b"a", b"dup", b"b",
            b"edged-reason", b"the producer's own"]
    flat += [x for i in range(12_000) for x in (f"w{i}".encode(), b"\x00")]
    r.execute_command("XADD", stream, "*", *flat)

    async def handler(event: Event) -> None:
        raise AssertionError("a malformed entry never reaches the handler")

    async def go() -> None:
        client = edged_client(server.url, socket_timeout=30)
        try:
            consumer = make_consumer(client, stream, handler, concurrency=1)
            async with Consuming(consumer):
                await until(lambda: consumer.stats.dead_lettered == 1, what="dead-lettered")
        finally:
            await client.aclose()

    anyio.run(go)
    res = dlq(server, "replay", stream, "--all", "--json")
    assert res.returncode == 0, res.stderr
    new_id = json.loads(res.stdout)["replayed"][0]["new_id"]
    assert r.xlen(f"{stream}:dead") == 0
    raw = r.client()
    raw.response_callbacks = {**raw.response_callbacks, "XRANGE": lambda reply, **_: reply}
    [(got_id, got)] = raw.execute_command("XRANGE", stream, new_id, new_id)
    assert got_id.decode() == new_id
    assert got == flat
