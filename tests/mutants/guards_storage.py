"""Mutants of the outbox (forwarding) and of retention (the trim script).

Every one was applied to the code, its tests run and seen failing, and the code restored.
Guarded by tests/test_outbox.py, tests/test_outbox_faults.py and tests/test_retention.py.
"""

from __future__ import annotations

from tests.mutants.mutant import Mutant

REFUSED_STREAM = "tests/test_outbox.py::test_one_refused_stream_holds_back_only_itself"
PAUSED_REDIS = ("tests/test_outbox_faults.py::"
                "test_redis_paused_while_publishing_loses_nothing_and_keeps_order")
TRIM_PROPERTY = "tests/test_retention.py::test_the_script_never_trims_what_a_group_needs"
SLOW_GROUP = ("tests/test_retention.py::"
              "test_slow_group_keeps_what_it_needs_while_the_rest_and_dead_letters_are_trimmed")

MUTANTS: list[Mutant] = [
    Mutant(
        name="outbox-drops-what-redis-refused",
        promise="the outbox removes an entry only after Redis took it",
        path="edged/outbox/forward.py",
        old="            if await self._send(client, stream, entries):\n",
        new="            if await self._send(client, stream, entries) or True:\n",
        tests=(REFUSED_STREAM,),
    ),
    Mutant(
        name="outbox-refused-stream-holds-back-all",
        promise="one stream Redis refuses holds back only itself (it waits on its own backoff)",
        path="edged/outbox/forward.py",
        old="skip = [s for s, b in self._blocked.items() if b.until > now]",
        new="skip: list[str] = []",
        tests=(REFUSED_STREAM,),
    ),
    Mutant(
        name="outbox-retries-without-probing",
        promise="a hanging Redis gets at most the batch in flight twice, not a copy per retry "
                "(a stream is retried only after XLEN answered)",
        path="edged/outbox/forward.py",
        old="            if retrying:  # does Redis answer",
        new="            if False:  # does Redis answer",
        tests=("tests/test_guard_outbox_retry.py", PAUSED_REDIS),
    ),
    Mutant(
        name="trim-ignores-pending-entries",
        promise="retention never trims an entry a group still has pending",
        path="edged/lua/trim.lua",
        old="    need = lower(need, summary[2])\n",
        new="    need = need\n",
        tests=(TRIM_PROPERTY,),
        fast=True,
    ),
    Mutant(
        name="trim-ignores-the-floor",
        promise="retention never trims an entry a group has not read yet",
        path="edged/lua/trim.lua",
        old="  minid = lower(minid, floor)\n",
        new="  minid = minid\n",
        tests=(TRIM_PROPERTY, SLOW_GROUP),
    ),
    Mutant(
        name="trim-empties-a-stream-nobody-read",
        promise="a stream without any group is held whole (nothing has been read yet)",
        path="edged/lua/trim.lua",
        old="if #groups == 0 and nogroup == 'hold' then",
        new="if false and nogroup == 'hold' then",
        tests=(TRIM_PROPERTY,),
    ),
]
