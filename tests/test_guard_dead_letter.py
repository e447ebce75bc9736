"""Dead-lettering is one step: the copy is kept and the entry acked together, or neither.

Guards the promises of lua/dead_letter.lua and its caller (Scripts.dead_letter, add_then_check):

- the copy to the dead-letter stream and the ack of the entry are one atomic step: a peer
  writing to the dead-letter stream cannot come between them, and a second step that fails
  (here: refused by the ACL) leaves no copy behind, so an entry is never both dead-lettered and
  still pending (to be dead-lettered a second time);
- an entry whose copy could not be written is not acked: it is never lost;
- an entry a peer has claimed meanwhile is not dead-lettered nor acked: it stays the peer's.

In process, against the session's real server. The faults are the server's own: CLIENT PAUSE
WRITE holds the consumer's first write so that a peer's write is queued right behind it, and
ACL SETUSER takes away write access to the stream while the handler runs.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis

from edged import Event, Reject
from edged.durations import Duration
from edged.keys import DEAD_DELIVERIES, DEAD_ID
from tests.servers import Server
from tests.support import Consuming, edged_client, make_consumer, pending_rows, until

pytestmark = pytest.mark.anyio

GROUP = "edged"



def add(r: redis.Redis, stream: str, payload: bytes = b"{}") -> str:
    return r.xadd(stream, {"payload": payload}).decode()


def copies_of(r: redis.Redis, dead: str, entry_id: str) -> list[dict[bytes, bytes]]:
    """The dead-letter copies of ``entry_id``, oldest first."""
    return [fields for _, fields in r.xrange(dead) if fields.get(DEAD_ID.encode()) == entry_id.encode()]


def write_held(r: redis.Redis, name: str) -> bool:
    """A connection named ``name`` waits with an XADD (alone or in a MULTI) held by the pause."""
    return any(c.get("name") == name and c.get("cmd") == "xadd" and "b" in c.get("flags", "")
               for c in r.client_list())


async def test_dead_letter_is_one_step_when_a_peer_writes_between(
    server: Server, r: redis.Redis, stream: str
) -> None:
    """The handler rejects entry X after pausing the server's writes (CLIENT PAUSE WRITE), so
    the dead-lettering's first write is held; a peer's XADD to the same dead-letter stream is
    then held right behind it, and the pause ends. Must hold: X was dead-lettered (its copy
    kept, once) and acked, as the copy and the ack are one step the peer's write cannot come
    between; the peer's entry is in the dead-letter stream too."""
    tag = uuid.uuid4().hex[:8]
    name, peer_name = f"edged:guard-{tag}", f"peer:guard-{tag}"
    dead = f"{stream}:dead"
    client = edged_client(server.url, socket_timeout=30, client_name=name)
    peer = redis.Redis.from_url(server.url, socket_timeout=30, client_name=peer_name)

    async def handler(event: Event) -> None:
        r.client_pause(20_000, all=False)  # writes wait from now on; ended below, or in 20 s
        raise Reject("bad")

    consumer = make_consumer(client, stream, handler, concurrency=1)
    entry_id = add(r, stream)
    try:
        async with Consuming(consumer):
            await until(lambda: write_held(r, name), what="the dead-letter write held")
            async with anyio.create_task_group() as tg:
                try:  # unpaused in here: the task group waits for the peer's thread
                    tg.start_soon(anyio.to_thread.run_sync,
                                  lambda: peer.xadd(dead, {"peer": b"copy"}))
                    await until(lambda: write_held(r, peer_name), what="the peer's write held")
                finally:
                    r.client_unpause()
            await until(lambda: consumer.stats.dead_lettered or consumer.health.problems,
                        what="the dead-lettering done or failed")
    finally:
        r.client_unpause()
        peer.close()
        await client.aclose()
    assert pending_rows(r, stream) == [], f"still pending: {consumer.health.problems}"
    assert len(copies_of(r, dead, entry_id)) == 1
    assert consumer.stats.dead_lettered == 1
    assert consumer.health.problems == {}
    assert [f for _, f in r.xrange(dead)][-1] == {b"peer": b"copy"}


async def refused_then_allowed(
    server: Server, r: redis.Redis, stream: str, *, rules: list[str],
    revoke: list[str] | None, allow: list[str],
) -> str:
    """Entry X, rejected on every delivery by a consumer logged in as its own ACL user (``+@all``
    plus ``rules``). On X's first delivery the handler applies ``revoke`` (if any) before it
    rejects; once the consumer reports the dead-lettering refused, ``allow`` is applied and X is
    dead-lettered on a later delivery. Returns X's id, after checking, at the moment the
    refusal is seen, that the refused attempt left no copy."""
    user, password = f"guard-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    dead = f"{stream}:dead"
    r.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "&*", "+@all",
                      *rules)
    url = server.url.replace("redis://", f"redis://{user}:{password}@")
    client = edged_client(url, socket_timeout=30)

    async def handler(event: Event) -> None:
        if event.delivery == 1 and revoke:
            r.execute_command("ACL", "SETUSER", user, *revoke)
        raise Reject("bad")

    consumer = make_consumer(client, stream, handler, concurrency=1, claim_idle=Duration(0.2),
                             claim_interval=Duration(0.1), retry_backoff=Duration(0.05))
    entry_id = add(r, stream)
    try:
        async with Consuming(consumer):
            await until(lambda: "dead-letter" in consumer.health.problems,
                        what="the first dead-lettering refused")
            assert copies_of(r, dead, entry_id) == [], "a refused attempt left its copy behind"
            r.execute_command("ACL", "SETUSER", user, *allow)
            await until(lambda: consumer.stats.dead_lettered == 1, timeout=20,
                        what=lambda: f"X dead-lettered; health {consumer.health.problems}")
    finally:
        await client.aclose()
        r.execute_command("ACL", "DELUSER", user)
    return entry_id


async def test_dead_letter_refused_half_way_leaves_no_copy(
    server: Server, r: redis.Redis, stream: str
) -> None:
    """The consumer logs in as its own ACL user. On X's first delivery the handler takes away
    the user's write access to the stream (the dead-letter stream stays writable) and rejects:
    the ack cannot be done. Access comes back once the failure is seen; X is reclaimed and
    rejected again. Must hold: the refused attempt left no copy behind, so X ends with exactly
    one copy in the dead-letter stream (of its second delivery), and is acked."""
    dead = f"{stream}:dead"
    entry_id = await refused_then_allowed(
        server, r, stream, rules=[], revoke=["resetkeys", f"~{dead}", f"%R~{stream}"],
        allow=["allkeys"])
    copies = copies_of(r, dead, entry_id)
    assert [c[DEAD_DELIVERIES.encode()] for c in copies] == [b"2"], copies
    assert pending_rows(r, stream) == []


async def test_an_entry_a_peer_claimed_is_not_dead_lettered(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """The handler of c1 lets a peer XCLAIM entry X to c2, then rejects it. Must hold: c1's
    dead-lettering finds X is no longer its own: X stays pending to c2, nothing is left in the
    dead-letter stream, and c1 counts a stale ack, not a dead letter."""
    dead = f"{stream}:dead"

    async def handler(event: Event) -> None:
        r.xclaim(stream, GROUP, "c2", 0, [event.id], justid=True)
        raise Reject("too late: the peer has it")

    consumer = make_consumer(client, stream, handler, concurrency=1)
    entry_id = add(r, stream)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.stale_acks or consumer.stats.dead_lettered,
                    what="the dead-lettering settled")
    assert [(row["id"], row["consumer"]) for row in pending_rows(r, stream)] == [(entry_id, "c2")]
    assert r.xlen(dead) == 0, r.xrange(dead)
    assert (consumer.stats.dead_lettered, consumer.stats.stale_acks) == (0, 1)


async def test_an_entry_whose_copy_was_not_written_is_not_acked(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """The dead-letter stream holds an entry with the last possible id, so the XADD of any copy
    fails ("exhausted the last possible ID"); the handler rejects entry X. Must hold: X is not
    acked (it stays pending to c1, to be dead-lettered once the dead-letter stream is fixed),
    nothing was added to the dead-letter stream, and the failure shows in the stream's health."""
    dead = f"{stream}:dead"
    last = "18446744073709551615-18446744073709551615"
    r.xadd(dead, {"operator": b"test"}, id=last)

    async def handler(event: Event) -> None:
        raise Reject("bad")

    consumer = make_consumer(client, stream, handler, concurrency=1)
    entry_id = add(r, stream)
    async with Consuming(consumer):
        await until(lambda: consumer.stats.dead_lettered or consumer.health.problems,
                    what="the dead-lettering done or failed")
    assert [(row["id"], row["consumer"]) for row in pending_rows(r, stream)] == [(entry_id, "c1")]
    assert [i.decode() for i, _ in r.xrange(dead)] == [last]
    assert consumer.stats.dead_lettered == 0
    assert "dead-letter" in consumer.health.problems


async def test_an_ack_refused_inside_the_script_leaves_no_copy(
    server: Server, r: redis.Redis, stream: str
) -> None:
    """The consumer's ACL user may run scripts and write every key but not XACK (-xack): the
    XADD of the copy and the script pass the ACL, the script's XACK is refused. Must hold: no
    copy stays behind for the refused attempt; once +xack is given back, X is dead-lettered
    exactly once and acked."""
    dead = f"{stream}:dead"
    entry_id = await refused_then_allowed(server, r, stream, rules=["-xack"], revoke=None,
                                          allow=["+xack"])
    assert len(copies_of(r, dead, entry_id)) == 1, copies_of(r, dead, entry_id)
    assert pending_rows(r, stream) == []
