"""Every mutant the check plays: the core delivery promises here, the rest by area."""

from __future__ import annotations

from tests.mutants import guards_runtime, guards_scripts, guards_storage
from tests.mutants.mutant import Mutant

CORE = [
    Mutant(
        name="fenced-ack-acks-what-a-peer-claimed",
        promise="an ack never removes an entry a peer has claimed (fenced acks)",
        path="edged/lua/fenced_ack.lua",
        old="if mine[id] or #redis.call(",
        new="if true or #redis.call(",
        tests=("tests/test_acker.py::test_acks_only_what_the_consumer_still_owns",),
        fast=True,
    ),
    Mutant(
        name="fenced-ack-trusts-the-clients-range",
        promise="every finished entry is acked (the fence's range is a hint: ids outside it are "
                "checked one by one, or they would stay pending and run again)",
        path="edged/lua/fenced_ack.lua",
        old="if mine[id] or #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0 then",
        new="if mine[id] then",
        tests=("tests/test_fenced_ack.py::test_ids_outside_the_range_are_acked_when_ours",),
    ),
    Mutant(
        name="fenced-ack-checks-outside-the-range-without-the-owner",
        promise="an ack never removes an entry a peer has claimed (fenced acks)",
        path="edged/lua/fenced_ack.lua",
        old="#redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0 then",
        new="#redis.call('XPENDING', stream, group, id, id, 1) > 0 then",
        tests=("tests/test_fenced_ack.py::test_a_peers_entry_is_not_acked_inside_or_outside_the_range",),
    ),
    Mutant(
        name="reader-reads-more-than-free-slots",
        promise="never more than `concurrency` entries held: every read asks for the free slots",
        path="edged/consume/reader.py",
        old="count = max(0, min(s.free + freed, self._max_read))",
        new="count = max(0, self._max_read)",
        tests=("tests/test_delivery.py::test_reader_fetches_only_free_slots",),
    ),
    Mutant(
        name="entry-past-max-deliveries-runs-again",
        promise="an entry delivered more than max-deliveries times is dead-lettered unrun",
        path="edged/consume/outcomes.py",
        old="if kv is None or delivery > self._max_deliveries or",
        new="if kv is None or delivery > self._max_deliveries + 1 or",
        tests=("tests/test_guard_max_deliveries.py",),
        fast=True,
    ),
]

CORE.append(Mutant(
    name="acked-entry-reported-as-lost-lease",
    promise="a lease is reported lost only when a peer owns the entry",
    path="edged/lua/lease.lua",
    old="  elseif #redis.call('XPENDING', stream, group, id, id, 1) > 0 then",
    new="  else",
    tests=("tests/test_guard_lease.py",),
    fast=True,
))

MUTANTS: list[Mutant] = [*CORE, *guards_scripts.MUTANTS, *guards_runtime.MUTANTS,
                         *guards_storage.MUTANTS]
