"""Guards what the lease script (edged/lua/lease.lua, `Scripts.extend_leases`) reports as a
lost lease: an entry a peer has claimed, never one this consumer has just acked.

The lease loop (consume/ownership.py) picks the ids to renew from the entries in flight,
then sends the script. An entry whose handler finishes meanwhile is acked by the reader or the
acker on another connection; when that ack reaches Redis before the lease script, the script
finds the entry in nobody's pending list and, today, reports it lost: the daemon logs "lost
the lease" and counts a lost lease though no peer took anything (seen once as a flake of
tests/test_faults.py::test_long_handler_keeps_its_lease). The race is shown here without
timing: the ack is simply done before the script runs.

Script calls against the session server; the consumers are plain names in the group.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from edged.scripts import Scripts
from tests.support import pending_rows

pytestmark = pytest.mark.anyio

GROUP = "edged"



def delivered_to(r: redis.Redis, stream: str, consumer: str) -> str:
    """A new entry, delivered (XREADGROUP) to ``consumer``; its id."""
    r.xgroup_create(stream, GROUP, id="$", mkstream=True)
    entry = r.xadd(stream, {"payload": b"{}"}).decode()
    ((_, [(got, _)]),) = r.xreadgroup(GROUP, consumer, {stream: ">"}, count=1)
    assert got.decode() == entry
    return entry


async def test_lease_of_own_entry_is_renewed_without_a_delivery(
    client: Any, r: redis.Redis, stream: str,
) -> None:
    """An entry of c1, made to look idle for 10 s: extending its lease reports nothing lost,
    resets its idle time and leaves its delivery count at 1."""
    entry = delivered_to(r, stream, "c1")
    r.xclaim(stream, GROUP, "c1", 0, [entry], idle=10_000, justid=True)
    assert await Scripts(client).extend_leases(stream, GROUP, "c1", [entry]) == []
    (row,) = r.xpending_range(stream, GROUP, min="-", max="+", count=10)
    assert int(row["time_since_delivered"]) < 5_000
    assert pending_rows(r, stream) == [{"id": entry, "consumer": "c1", "deliveries": 1}]


async def test_entry_claimed_by_a_peer_is_a_lost_lease(
    client: Any, r: redis.Redis, stream: str,
) -> None:
    """c1's entry claimed by c2: c1's lease extension reports it lost and leaves it with c2."""
    entry = delivered_to(r, stream, "c1")
    r.xclaim(stream, GROUP, "c2", 0, [entry])
    assert await Scripts(client).extend_leases(stream, GROUP, "c1", [entry]) == [entry]
    assert pending_rows(r, stream) == [{"id": entry, "consumer": "c2", "deliveries": 2}]


async def test_entry_acked_before_the_lease_script_is_not_a_lost_lease(
    client: Any, r: redis.Redis, stream: str,
) -> None:
    """The race, ordered: c1's entry is in the lease loop's list, its handler finishes and
    its fenced ack lands first; then the lease script runs on that list. The entry is in no
    pending list: it was finished here, not taken by a peer, so no lease is lost."""
    scripts = Scripts(client)
    entry = delivered_to(r, stream, "c1")
    assert await scripts.fenced_ack(stream, GROUP, "c1", [entry]) == 1
    assert await scripts.extend_leases(stream, GROUP, "c1", [entry]) == []
