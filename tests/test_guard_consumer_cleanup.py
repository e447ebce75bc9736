"""Removing dead consumers never drops a pending entry.

XGROUP DELCONSUMER drops a consumer's pending entries for good. Guards the promise that a
consumer owning entries is never deleted by the clean-up (edged/daemon/cleanup.py, which skips
consumers XINFO shows owning entries, and lua/delete_consumer.lua, which checks again in the
same step as the delete):

- the script itself refuses a consumer that owns an entry, however long it was idle;
- the script refuses it too when the consumer got its entry after the pass's own check (the
  race the Python check cannot see);
- a clean-up pass over a dead consumer that owns an entry keeps it and its entry (the two
  checks together).

In process, against the session's real server; the race is made with CLIENT PAUSE WRITE, which
holds writes in the order they came.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis

from edged.daemon.cleanup import remove_dead_consumers
from edged.scripts import Scripts
from tests.servers import Server
from tests.support import edged_client, pending_rows, until

pytestmark = pytest.mark.anyio

GROUP = "edged"
EXPIRY_MS = 300



def prefix() -> str:
    """A key prefix of its own: no heartbeat record nor last-seen entry of any other test."""
    return f"g{uuid.uuid4().hex[:6]}:"


def idle_ms(r: redis.Redis, stream: str) -> dict[str, int]:
    return {c["name"].decode(): int(c["idle"]) for c in r.xinfo_consumers(stream, GROUP)}


def held(r: redis.Redis, name: str, commands: tuple[str, ...]) -> bool:
    """A connection named ``name`` waits with one of ``commands``, held by the pause."""
    return any(c.get("name") == name and c.get("cmd") in commands and "b" in c.get("flags", "")
               for c in r.client_list())


async def test_delete_script_refuses_a_consumer_that_owns_an_entry(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """"holder" read an entry and then did nothing for longer than the expiry. Asked directly
    (no Python check before it), the delete script answers 'pending' and deletes nothing: the
    consumer is still in the group and still owns its entry, delivery count unchanged."""
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    entry = r.xadd(stream, {"payload": b"{}"}).decode()
    r.xreadgroup(GROUP, "holder", {stream: ">"})
    await until(lambda: idle_ms(r, stream)["holder"] > EXPIRY_MS,
                what=f"holder idle past {EXPIRY_MS} ms")
    verdict = await Scripts(client).delete_consumer(stream, GROUP, "holder", EXPIRY_MS)
    assert verdict == "pending"
    assert "holder" in idle_ms(r, stream), "the consumer was deleted with its pending entry"
    assert pending_rows(r, stream) == [{"id": entry, "consumer": "holder", "deliveries": 1}]


async def test_cleanup_refuses_a_consumer_that_got_an_entry_after_the_pass_checked_it(
    server: Server, r: redis.Redis, stream: str
) -> None:
    """A clean-up pass finds "ghost" dead and owning nothing; between that check and the
    delete, a peer's XCLAIM gives ghost an entry (CLIENT PAUSE WRITE holds the XCLAIM, then the
    pass's delete script behind it, and lets them run in that order). Expiry 0 turns the idle
    check off, so the script's own pending check is what stands between this race and a lost
    entry. Must hold: ghost is not removed and still owns the entry, delivery count unchanged."""
    keys = prefix()
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    entry = r.xadd(stream, {"payload": b"{}"}).decode()
    r.xreadgroup(GROUP, "other", {stream: ">"})
    r.xgroup_createconsumer(stream, GROUP, "ghost")
    tag = uuid.uuid4().hex[:8]
    pass_name, peer_name = f"cleanup:{tag}", f"peer:{tag}"
    client = edged_client(server.url, socket_timeout=30, client_name=pass_name)
    peer = redis.Redis.from_url(server.url, socket_timeout=30, client_name=peer_name)
    removed: list[str] = []

    async def cleanup_pass() -> None:
        removed.extend(await remove_dead_consumers(client, Scripts(client), keys, stream, GROUP,
                                                   "me", 0))

    try:
        r.client_pause(20_000, all=False)  # writes wait, in order, until the unpause below
        async with anyio.create_task_group() as tg:
            try:  # unpaused in here: the task group waits for the peer's thread
                tg.start_soon(anyio.to_thread.run_sync,
                              lambda: peer.xclaim(stream, GROUP, "ghost", 0, [entry], justid=True))
                await until(lambda: held(r, peer_name, ("xclaim",)),
                            what="the peer's XCLAIM held")
                tg.start_soon(cleanup_pass)
                await until(lambda: held(r, pass_name, ("evalsha", "eval")),
                            what="the pass's delete script held behind the XCLAIM")
            finally:
                r.client_unpause()
    finally:
        r.client_unpause()
        peer.close()
        await client.aclose()
    # ("other", owning nothing by the time of its delete, may go: that loses nothing.)
    assert "ghost" not in removed
    assert "ghost" in idle_ms(r, stream), "ghost was deleted with the entry it had just got"
    assert pending_rows(r, stream) == [{"id": entry, "consumer": "ghost", "deliveries": 1}]


async def test_cleanup_keeps_a_dead_consumer_that_owns_an_entry(
    client: Any, r: redis.Redis, stream: str
) -> None:
    """"ghost" (no heartbeat, never seen) owns an entry and is idle past the expiry; "empty"
    (the same, owning nothing) is there too. One clean-up pass removes "empty" only: ghost and
    its entry stay, delivery count unchanged."""
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    entry = r.xadd(stream, {"payload": b"{}"}).decode()
    r.xreadgroup(GROUP, "ghost", {stream: ">"})
    r.xgroup_createconsumer(stream, GROUP, "empty")
    await until(lambda: min(idle_ms(r, stream).values()) > EXPIRY_MS,
                what=f"both idle past {EXPIRY_MS} ms")
    removed = await remove_dead_consumers(client, Scripts(client), prefix(), stream, GROUP, "me",
                                          EXPIRY_MS)
    assert removed == ["empty"]
    assert set(idle_ms(r, stream)) == {"ghost"}, "ghost was deleted with its pending entry"
    assert pending_rows(r, stream) == [{"id": entry, "consumer": "ghost", "deliveries": 1}]
