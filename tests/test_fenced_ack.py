"""lua/fenced_ack.lua and the range the client gives it (scripts.fence_range), on the real server.

The script looks this consumer's entries up with one XPENDING over a range the client picks
cheaply; ids outside that range must still be acked when they are ours (checked one by one) and
never when a peer owns them. Both argument forms are played: one id per argument (the reader's
own connection) and all ids in one argument (redis-py's packing: the acker, a cluster).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from edged.scripts import Scripts, fence_range
from tests.support import pending_rows

pytestmark = pytest.mark.anyio

GROUP = "edged"

# Ids Redis would never make on its own clock, and ordered as numbers, not as text: millisecond
# parts of 1, 2 and 13 digits, sequence parts of 1 to 3 digits.
ODD_IDS = ["9-1", "9-10", "10-2", "10-100", "99-5", "1700000000000-7", "1700000000000-12"]


def read_as(r: redis.Redis, stream: str, ids: list[str], consumer: str = "c1") -> None:
    for entry_id in ids:
        r.xadd(stream, {"f": "v"}, id=entry_id)
    r.xgroup_create(stream, GROUP, id="0")
    r.xreadgroup(GROUP, consumer, {stream: ">"}, count=len(ids))


async def fenced_ack(client: Any, stream: str, ids: list[str], *, joined: bool) -> int:
    keys, args = Scripts(client).fenced_ack_args(stream, GROUP, "c1", ids, 10, joined=joined)
    return int(await client.eval(Scripts.FENCED_ACK_SOURCE, len(keys), *keys, *args))


def test_the_range_holds_ids_with_sequence_parts_of_any_length() -> None:
    """Ids of one millisecond length, sequence parts of 1 to 20 digits, in any order: the range
    holds all of them (text order alone would put ...-10 before ...-9)."""
    ids = ["1700000000001-9", "1700000000000-10", "1700000000001-18446744073709551615",
           "1700000000000-0", "1700000000002-3", "1700000000002-123"]
    lo, hi = fence_range(ids)
    assert (lo, hi) == ("1700000000000-0", "1700000000002-18446744073709551615")


def test_the_range_of_one_millisecond_is_exact() -> None:
    """A busy stream's batch often lies within one millisecond: the range is then its smallest
    and largest id as numbers (so the script reads no other entry of this consumer)."""
    ids = ["1700000000000-9", "1700000000000-10", "1700000000000-100", "1700000000000-11"]
    assert fence_range(ids) == ("1700000000000-9", "1700000000000-100")


@pytest.mark.parametrize("joined", [False, True], ids=["one-id-per-argument", "joined"])
async def test_ids_outside_the_range_are_acked_when_ours(
    client: Any, r: redis.Redis, stream: str, joined: bool
) -> None:
    """Ids whose millisecond parts differ in length defeat the cheap range (it may even be
    empty): every one of them is still found ours and acked."""
    read_as(r, stream, ODD_IDS)
    lo, hi = fence_range(ODD_IDS)
    assert not all(lo <= i <= hi for i in ODD_IDS)  # the case under test: the range misses some
    assert await fenced_ack(client, stream, list(reversed(ODD_IDS)), joined=joined) == len(ODD_IDS)
    assert pending_rows(r, stream) == []


@pytest.mark.parametrize("joined", [False, True], ids=["one-id-per-argument", "joined"])
async def test_a_peers_entry_is_not_acked_inside_or_outside_the_range(
    client: Any, r: redis.Redis, stream: str, joined: bool
) -> None:
    """Two of c1's entries claimed by c2, one inside the range's reach and one outside it: c1's
    fenced ack of all of them acks only its own, and c2's stay pending for c2."""
    read_as(r, stream, ODD_IDS)
    claimed = ["10-100", "1700000000000-12"]
    r.xclaim(stream, GROUP, "c2", 0, claimed, justid=True)
    assert await fenced_ack(client, stream, ODD_IDS, joined=joined) == len(ODD_IDS) - 2
    assert sorted((row["id"], row["consumer"]) for row in pending_rows(r, stream)) == sorted(
        (entry_id, "c2") for entry_id in claimed)


async def test_an_empty_ack_acks_nothing(client: Any, r: redis.Redis, stream: str) -> None:
    read_as(r, stream, ["1-1"])
    keys = [stream]
    for args in ([GROUP, "c1", 10, "0-0", "0-0"], [GROUP, "c1", 10, "0-0", "0-0", ""]):
        assert await client.eval(Scripts.FENCED_ACK_SOURCE, 1, *keys, *args) == 0
    assert [row["id"] for row in pending_rows(r, stream)] == ["1-1"]
