"""Delivery semantics of one StreamConsumer, in process, against a real server (README "Delivery promises").

Each test drives a StreamConsumer with a handler defined here and checks the outcome from Redis
itself (XPENDING, XINFO GROUPS, the dead-letter stream) and from ``consumer.stats``.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from typing import Any

import anyio
import msgspec
import pytest
import redis

from edged import Event, Reject, Retry
from edged.config import StreamConfig
from edged.handlers import build_handler
from edged.keys import (
    DEAD_CONSUMER,
    DEAD_DELIVERIES,
    DEAD_FAILED_AT,
    DEAD_GROUP,
    DEAD_ID,
    DEAD_REASON,
    DEAD_STREAM,
)
from tests.servers import Server
from tests.support import Consuming, edged_client, make_consumer, pending_rows, until

pytestmark = pytest.mark.anyio

GROUP = "edged"




def group_info(r: redis.Redis, stream: str) -> dict[str, Any]:
    (info,) = [g for g in r.xinfo_groups(stream) if g["name"] in (GROUP, GROUP.encode())]
    return info


def dead_entries(r: redis.Redis, stream: str) -> list[tuple[str, dict[str, bytes]]]:
    return [
        (eid.decode(), {k.decode(): v for k, v in fields.items()})
        for eid, fields in r.xrange(f"{stream}:dead")
    ]


def add(r: redis.Redis, stream: str, payload: bytes = b"{}", **extra: bytes) -> str:
    return r.xadd(stream, {"payload": payload, **extra}).decode()


# --------------------------------------------------------------------------- acks


async def test_handled_entries_are_acked(client: Any, r: redis.Redis, stream: str) -> None:
    """Five entries are handled by a returning handler: each runs once and the PEL is empty."""
    seen: list[str] = []

    async def handler(event: Event) -> None:
        seen.append(event.id)

    consumer = make_consumer(client, stream, handler, concurrency=2)
    ids = [add(r, stream, msgspec.json.encode({"n": n})) for n in range(5)]
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 5, what="5 acks")
    assert sorted(seen) == sorted(ids)
    assert r.xpending(stream, GROUP)["pending"] == 0
    assert consumer.stats.stale_acks == 0


async def test_acks_work_with_an_empty_script_cache(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """The server's script cache is empty (a fresh server, a restart, a failover to a replica):
    SCRIPT FLUSH, then five entries are handled by a returning handler with concurrency 2.
    Must hold: all five are acked (PEL empty), the consumer never holds more than 2 of them
    pending, and the reader does not spin while waiting (a handful of reads, not thousands)."""
    r.script_flush()
    most_pending = 0

    async def handler(event: Event) -> None:
        nonlocal most_pending
        most_pending = max(most_pending, r.xpending(stream, GROUP)["pending"])

    consumer = make_consumer(client, stream, handler, concurrency=2)
    for _ in range(5):
        add(r, stream)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 5, timeout=5, what="5 acks")
        await anyio.sleep(0.3)  # idle: the reader should be parked in its blocking read
    assert r.xpending(stream, GROUP)["pending"] == 0
    assert most_pending <= 2
    assert consumer.stats.reads < 100


async def test_fenced_ack_does_not_ack_an_entry_a_peer_claimed(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """While c1's handler runs, a peer XCLAIMs the entry to c2; c1's handler then returns.

    Must hold: c1 does not ack it (it stays pending, owned by c2) and counts one stale ack.
    """
    started = anyio.Event()
    release = anyio.Event()

    async def handler(event: Event) -> None:
        started.set()
        await release.wait()

    consumer = make_consumer(client, stream, handler, concurrency=1)
    entry_id = add(r, stream)
    async with Consuming(consumer):
        with anyio.fail_after(10):
            await started.wait()
        claimed = r.xclaim(stream, GROUP, "c2", 0, [entry_id], justid=True)
        assert [c.decode() for c in claimed] == [entry_id]
        release.set()
        await until(lambda: consumer.stats.stale_acks == 1, what="the stale ack to be counted")
    assert consumer.stats.acked == 0
    rows = pending_rows(r, stream)
    assert [(row["id"], row["consumer"]) for row in rows] == [(entry_id, "c2")]


# --------------------------------------------------------------------------- dead letters


async def test_reject_dead_letters_with_original_fields_and_metadata(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """A handler raising Reject("bad thing"): the entry is copied to <stream>:dead with its own
    fields plus the edged-* metadata, and the original is acked."""
    calls: list[str] = []

    async def handler(event: Event) -> None:
        calls.append(event.id)
        raise Reject("bad thing")

    consumer = make_consumer(client, stream, handler, concurrency=1)
    entry_id = add(r, stream, b'{"a":1}', source=b"test")
    async with Consuming(consumer):
        await until(lambda: consumer.stats.dead_lettered == 1, what="the entry dead-lettered")
    assert calls == [entry_id]
    (_, dead), = dead_entries(r, stream)
    assert dead["payload"] == b'{"a":1}'
    assert dead["source"] == b"test"
    assert b"bad thing" in dead[DEAD_REASON]
    assert dead[DEAD_STREAM] == stream.encode()
    assert dead[DEAD_GROUP] == GROUP.encode()
    assert dead[DEAD_ID] == entry_id.encode()
    assert dead[DEAD_DELIVERIES] == b"1"
    assert dead[DEAD_CONSUMER] == b"c1"
    failed_at = datetime.fromisoformat(dead[DEAD_FAILED_AT].decode())
    assert failed_at.tzinfo is not None
    assert r.xpending(stream, GROUP)["pending"] == 0
    assert consumer.stats.acked == 0


@pytest.mark.parametrize(
    ("codec", "bad"),
    [("json", b"{not json"), ("msgpack", b"\xc1\x00"), ("msgpack", b"\x92\x01")],
)
async def test_undecodable_payload_is_dead_lettered_without_calling_the_handler(
    client: Any, r: redis.Redis, stream: str, codec: str, bad: bytes
) -> None:
    """A payload the stream's codec cannot decode goes to the dead-letter stream at once, on its
    first delivery, with "undecodable" in the reason; the handler never sees it. A good entry
    after it is handled normally."""
    seen: list[Any] = []

    async def handler(event: Event) -> None:
        seen.append(event.payload)

    consumer = make_consumer(client, stream, handler, concurrency=1, codec=codec)
    bad_id = add(r, stream, bad, source=b"test")
    good = msgspec.json.encode({"ok": 1}) if codec == "json" else msgspec.msgpack.encode({"ok": 1})
    add(r, stream, good)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 1 and consumer.stats.dead_lettered == 1,
                    what="one dead-lettered, one acked")
    assert seen == [{"ok": 1}]
    (_, dead), = dead_entries(r, stream)
    assert dead[DEAD_ID] == bad_id.encode()
    assert dead["payload"] == bad
    assert dead["source"] == b"test"
    assert b"undecodable" in dead[DEAD_REASON]
    assert dead[DEAD_DELIVERIES] == b"1"
    assert r.xpending(stream, GROUP)["pending"] == 0


async def test_raw_codec_hands_bytes_untouched(client: Any, r: redis.Redis, stream: str) -> None:
    """codec="raw": the handler's payload is exactly the stored bytes (even invalid UTF-8)."""
    body = b"\x00\xff{not json}\xc1"
    seen: list[Any] = []

    async def handler(event: Event) -> None:
        seen.append(event.payload)

    consumer = make_consumer(client, stream, handler, concurrency=1, codec="raw")
    add(r, stream, body)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 1, what="the raw entry acked")
    assert seen == [body]
    assert not r.exists(f"{stream}:dead")


# --------------------------------------------------------------------------- failures


async def test_handler_error_leaves_entry_pending(client: Any, r: redis.Redis, stream: str) -> None:
    """A handler raising RuntimeError (delivery 1 of 5): the entry is not acked and stays pending
    for c1 with one delivery; stats.failed counts it; nothing is dead-lettered; the slot comes
    back, so a later entry is still handled."""
    async def handler(event: Event) -> None:
        if event.payload.get("fail"):
            raise RuntimeError("kaput")

    consumer = make_consumer(client, stream, handler, concurrency=1, max_deliveries=5)
    bad_id = add(r, stream, b'{"fail":true}')
    good_id = add(r, stream, b'{"fail":false}')
    async with Consuming(consumer):
        await until(lambda: consumer.stats.failed == 1 and consumer.stats.acked == 1,
                    what="one failure and one ack")
    assert pending_rows(r, stream) == [{"id": bad_id, "consumer": "c1", "deliveries": 1}]
    assert good_id not in [row["id"] for row in pending_rows(r, stream)]
    assert consumer.stats.dead_lettered == 0
    assert not r.exists(f"{stream}:dead")


async def test_handler_error_on_last_delivery_dead_letters(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """max-deliveries=1 and the handler raises RuntimeError("kaput"): the entry is dead-lettered
    with "max-deliveries exceeded" and the error in the reason, and acked."""
    async def handler(event: Event) -> None:
        raise RuntimeError("kaput")

    consumer = make_consumer(client, stream, handler, concurrency=1, max_deliveries=1)
    entry_id = add(r, stream)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.dead_lettered == 1, what="the entry dead-lettered")
    (_, dead), = dead_entries(r, stream)
    assert dead[DEAD_ID] == entry_id.encode()
    reason = dead[DEAD_REASON].decode()
    assert "max-deliveries exceeded" in reason
    assert "kaput" in reason
    assert dead[DEAD_DELIVERIES] == b"1"
    assert r.xpending(stream, GROUP)["pending"] == 0
    assert consumer.stats.failed == 1


async def test_retry_leaves_entry_pending(client: Any, r: redis.Redis, stream: str) -> None:
    """A handler raising Retry(): the entry stays pending for c1, is not dead-lettered, and
    stats.retried counts it."""
    async def handler(event: Event) -> None:
        raise Retry()

    consumer = make_consumer(client, stream, handler, concurrency=1, max_deliveries=5)
    entry_id = add(r, stream)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.retried == 1, what="the retry counted")
    assert pending_rows(r, stream) == [{"id": entry_id, "consumer": "c1", "deliveries": 1}]
    assert consumer.stats.acked == 0
    assert consumer.stats.dead_lettered == 0
    assert not r.exists(f"{stream}:dead")


# --------------------------------------------------------------------------- shutdown


def reader_blocked(r: redis.Redis, name: str) -> bool:
    return any(
        c.get("name") == name and c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
        for c in r.client_list()
    )


async def test_shutdown_releases_entries_fetched_after_stop(
    server: Server, r: redis.Redis, stream: str
) -> None:
    """Concurrency 4, two handlers blocked, the reader blocked in XREADGROUP (BLOCK 10 s) for the
    two free slots. stop() is called, THEN two entries are added: the blocked read returns them.

    Must hold: they are released (stats.released == 2) and never run; a peer's XAUTOCLAIM with
    min-idle 60 s takes both at once and their delivery count then reads 1; the two running
    handlers, released, finish and are acked; run() returns.
    """
    name = f"edged:test-{uuid.uuid4().hex[:8]}"
    client = edged_client(server.url, socket_timeout=30, client_name=name)
    started: list[str] = []
    release = anyio.Event()

    async def handler(event: Event) -> None:
        started.append(event.id)
        await release.wait()

    consumer = make_consumer(client, stream, handler, concurrency=4, read_block=10.0)
    try:
        async with Consuming(consumer, grace=10) as run:
            first = [add(r, stream), add(r, stream)]
            await until(lambda: len(started) == 2, what="two handlers running")
            await until(lambda: reader_blocked(r, name), what="the reader blocked in XREADGROUP")
            consumer.stop(anyio.current_time() + 10)
            with r.pipeline(transaction=True) as pipe:  # both arrive in one read
                pipe.xadd(stream, {"payload": b"{}"})
                pipe.xadd(stream, {"payload": b"{}"})
                late = [i.decode() for i in pipe.execute()]
            await until(lambda: consumer.stats.released == 2, what="two entries released")
            assert not run.done.is_set()
            _cursor, claimed, *_ = r.xautoclaim(stream, GROUP, "c2", 60_000, "0-0", count=10)
            assert sorted(eid.decode() for eid, _ in claimed) == sorted(late)
            rows = {row["id"]: row for row in pending_rows(r, stream)}
            for entry_id in late:
                assert rows[entry_id]["consumer"] == "c2"
                assert rows[entry_id]["deliveries"] == 1
            release.set()
            with anyio.fail_after(10):
                await run.done.wait()
    finally:
        await client.aclose()
    assert started == first
    assert consumer.stats.acked == 2
    assert consumer.stats.released == 2
    rows = pending_rows(r, stream)
    assert sorted(row["id"] for row in rows) == sorted(late)
    assert {row["consumer"] for row in rows} == {"c2"}


async def test_grace_end_cancels_handler_and_leaves_entry_pending(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """A handler that never finishes; stop() with a 0.5 s grace. Must hold: run() returns soon
    after, the handler was cancelled (stats.cancelled == 1), and the entry stays pending for c1."""
    started = anyio.Event()
    cancelled: list[bool] = []

    async def handler(event: Event) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    consumer = make_consumer(client, stream, handler, concurrency=1, read_block=0.2)
    entry_id = add(r, stream)
    async with Consuming(consumer) as run:
        with anyio.fail_after(10):
            await started.wait()
        t0 = anyio.current_time()
        consumer.stop(t0 + 0.5)
        with anyio.fail_after(5):
            await run.done.wait()
        assert anyio.current_time() - t0 >= 0.45
    assert cancelled == [True]
    assert consumer.stats.cancelled == 1
    assert consumer.stats.acked == 0
    assert pending_rows(r, stream) == [{"id": entry_id, "consumer": "c1", "deliveries": 1}]


# --------------------------------------------------------------------------- backpressure


async def test_reader_fetches_only_free_slots(client: Any, r: redis.Redis, stream: str) -> None:
    """Concurrency 3, handlers blocked, 20 entries added. Must hold: exactly 3 are delivered
    (XPENDING for c1 == 3, entries-read 3, lag 17) and it stays so; when one handler finishes,
    exactly one more is fetched (4 read, 3 pending); once all are released all 20 are handled,
    the PEL is empty and no more than 3 handlers ever ran at once."""
    send, receive = anyio.create_memory_object_stream[None](100)
    running = 0
    max_running = 0
    handled: list[str] = []

    async def handler(event: Event) -> None:
        nonlocal running, max_running
        running += 1
        max_running = max(max_running, running)
        try:
            await receive.receive()  # one token per handler; EndOfStream once all are released
        except anyio.EndOfStream:
            pass
        finally:
            running -= 1
        handled.append(event.id)

    def check_window(read: int) -> None:
        mine = r.xpending_range(stream, GROUP, "-", "+", 100, consumername="c1")
        assert len(mine) == 3
        info = group_info(r, stream)
        assert (info["entries-read"], info["lag"], info["pending"]) == (read, 20 - read, 3)

    consumer = make_consumer(client, stream, handler, concurrency=3, start_id="$")
    async with Consuming(consumer):
        with anyio.fail_after(10):
            await consumer.ready.wait()
        with r.pipeline(transaction=False) as pipe:
            for n in range(20):
                pipe.xadd(stream, {"payload": msgspec.json.encode({"n": n})})
            ids = [i.decode() for i in pipe.execute()]
        await until(lambda: running == 3, what="three handlers running")
        for _ in range(5):  # a short observation window: nothing more is fetched
            check_window(read=3)
            await anyio.sleep(0.1)
        send.send_nowait(None)  # one handler finishes: one slot, one more entry
        await until(lambda: len(handled) == 1 and running == 3, what="a fourth handler running")
        for _ in range(3):
            check_window(read=4)
            await anyio.sleep(0.1)
        send.close()
        await until(lambda: consumer.stats.acked == 20, what="all 20 acked")
    receive.close()
    assert sorted(handled) == sorted(ids)
    assert max_running == 3
    assert r.xpending(stream, GROUP)["pending"] == 0


# --------------------------------------------------------------------------- own history


async def test_own_pending_history_is_handled_first(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """Two entries were delivered to c1 by an earlier run and never acked; two more were added
    since. A new c1 handles the old two first (delivery 2), then the new ones (delivery 1)."""
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    old = [add(r, stream), add(r, stream)]
    r.xreadgroup(GROUP, "c1", {stream: ">"})
    new = [add(r, stream), add(r, stream)]
    seen: list[tuple[str, int]] = []

    async def handler(event: Event) -> None:
        seen.append((event.id, event.delivery))

    consumer = make_consumer(client, stream, handler, concurrency=1)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 4, what="four acks")
    assert seen == [(old[0], 2), (old[1], 2), (new[0], 1), (new[1], 1)]
    assert r.xpending(stream, GROUP)["pending"] == 0


async def test_deleted_pending_entry_is_acked_away(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """An entry pending for c1 was XDEL'ed from the stream: the new c1 acks it away (counted in
    stats.deleted) without calling the handler; the other pending entry is handled."""
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    gone, kept = add(r, stream), add(r, stream)
    r.xreadgroup(GROUP, "c1", {stream: ">"})
    r.xdel(stream, gone)
    seen: list[str] = []

    async def handler(event: Event) -> None:
        seen.append(event.id)

    consumer = make_consumer(client, stream, handler, concurrency=2)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.deleted == 1 and kept in seen
                    and r.xpending(stream, GROUP)["pending"] == 0, what="the PEL drained")
        with anyio.fail_after(5):
            await consumer.ready.wait()
    assert seen == [kept]
    assert consumer.stats.deleted == 1
    assert not r.exists(f"{stream}:dead")


# --------------------------------------------------------------------------- python handlers

_SEEN: dict[str, list[tuple[Event, int]]] = {}


async def capture_async(event: Event) -> None:
    _SEEN.setdefault(event.stream, []).append((event, threading.get_ident()))


def capture_sync(event: Event) -> None:
    _SEEN.setdefault(event.stream, []).append((event, threading.get_ident()))


@pytest.mark.parametrize("spec", ["capture_async", "capture_sync"])
async def test_python_handlers_get_the_event(
    client: Any, r: redis.Redis, stream: str, spec: str
) -> None:
    """An async and a sync handler, loaded by build_handler from "module:function", get an Event
    with stream, group, id (str), fields (str -> bytes, metadata included), the decoded payload
    and the delivery count. The sync one runs in a worker thread, the async one on the loop."""
    handler = build_handler(StreamConfig(stream=stream, handler=f"tests.test_delivery:{spec}"), 0)
    consumer = make_consumer(client, stream, handler, concurrency=2)
    body = msgspec.json.encode({"a": 1, "b": ["x", None]})
    entry_id = add(r, stream, body, source=b"test", blob=b"\xff\x00")
    async with Consuming(consumer):
        await until(lambda: consumer.stats.acked == 1, what="the entry acked")
    ((event, thread_id),) = _SEEN.pop(stream)
    assert isinstance(event, Event)
    assert event.stream == stream
    assert event.group == GROUP
    assert isinstance(event.id, str)
    assert event.id == entry_id
    assert event.fields == {"payload": body, "source": b"test", "blob": b"\xff\x00"}
    assert event.payload == {"a": 1, "b": ["x", None]}
    assert event.delivery == 1
    if spec == "capture_sync":
        assert thread_id != threading.get_ident()
    else:
        assert thread_id == threading.get_ident()
