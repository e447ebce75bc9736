"""Mutants of reclaim, dead-lettering and consumer clean-up, each verified to be killed.

Every one was applied to the code, its tests run and seen failing (valkey 9 and Redis 7.0),
and the code restored. Guarded by tests/test_guard_reclaim.py, tests/test_guard_dead_letter.py
and tests/test_guard_consumer_cleanup.py.
"""

from __future__ import annotations

from tests.mutants.mutant import Mutant

RECLAIM = "tests/test_guard_reclaim.py"
DEAD_LETTER = "tests/test_guard_dead_letter.py"
CLEANUP = "tests/test_guard_consumer_cleanup.py"

_DEAD_LETTER_CALL = """        return await add_then_check(self._client, dead_stream, [*meta, *fields],
                                    self.DEAD_LETTER_SOURCE, [stream, dead_stream],
                                    [group, consumer, entry_id, *meta])
"""

MUTANTS: list[Mutant] = [
    Mutant(
        name="reclaim-ignores-free-slots",
        promise="nothing waits prefetched: it never holds more than `concurrency` "
                "delivered-and-unacked entries (a reclaim step claims at most the free slots)",
        path="edged/consume/reclaim.py",
        old="count = min(s.free, self._max_read)",
        new="count = self._max_read",
        tests=(f"{RECLAIM}::test_reclaim_claims_no_more_than_the_free_slots",),
    ),
    Mutant(
        name="reclaim-reruns-an-entry-running-here",
        promise="an entry is never run twice at once: reclaim skips the ids in flight here",
        path="edged/consume/reclaim.py",
        old="            if entry_id in s.inflight:\n"
            "                continue  # already ours and queued or running: never run an entry twice\n",
        new="",
        tests=(f"{RECLAIM}::test_reclaim_never_starts_an_entry_still_running_here",),
    ),
    Mutant(
        name="reclaim-takes-a-live-peers-entries",
        promise="long handlers keep their lease: no peer takes an entry whose handler still runs "
                "(XAUTOCLAIM only takes entries idle past claim-idle)",
        path="edged/consume/reclaim.py",
        old="s.stream, s.group, s.consumer, s.cfg.claim_idle.ms, self._cursor, count,",
        new="s.stream, s.group, s.consumer, 0, self._cursor, count,",
        tests=(f"{RECLAIM}::test_reclaim_leaves_a_live_peers_entry_alone",),
        fast=True,
    ),
    Mutant(
        name="reclaim-script-ignores-min-idle",
        promise="long handlers keep their lease: no peer takes an entry whose handler still runs "
                "(lua/reclaim.lua passes claim-idle to XAUTOCLAIM)",
        path="edged/lua/reclaim.lua",
        old="redis.call('XAUTOCLAIM', stream, group, ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])",
        new="redis.call('XAUTOCLAIM', stream, group, ARGV[2], 0, ARGV[4], 'COUNT', ARGV[5])",
        tests=(f"{RECLAIM}::test_reclaim_leaves_a_live_peers_entry_alone",),
    ),
    Mutant(
        name="reclaim-forgets-delivery-counts",
        promise="max-deliveries counts deliveries as Redis does: a reclaimed entry keeps its count",
        path="edged/lua/reclaim.lua",
        old="counts[i] = (p[1] and p[1][4]) or 1",
        new="counts[i] = 1",
        tests=(f"{RECLAIM}::test_reclaim_leaves_a_live_peers_entry_alone",),
    ),
    Mutant(
        name="dead-letter-in-two-round-trips",
        promise="copying a poison entry to the dead-letter stream and acking the original are one "
                "atomic step (here: the XADD, then the check-and-ack script, as two round trips)",
        path="edged/scripts.py",
        old=_DEAD_LETTER_CALL,
        new="""        await self._client.execute_command("XADD", dead_stream, "*", *meta, *fields)
        result = await self._client.eval(self.DEAD_LETTER_SOURCE, 2, stream, dead_stream,
                                         group, consumer, entry_id, *meta)
        return None if result is None else text(result)
""",
        tests=(f"{DEAD_LETTER}::test_dead_letter_is_one_step_when_a_peer_writes_between",
               f"{DEAD_LETTER}::test_dead_letter_refused_half_way_leaves_no_copy"),
    ),
    Mutant(
        name="dead-letter-xadd-then-plain-xack",
        promise="copying a poison entry to the dead-letter stream and acking the original are one "
                "atomic step (here: an XADD, then an unfenced XACK)",
        path="edged/scripts.py",
        old=_DEAD_LETTER_CALL,
        new="""        added = await self._client.execute_command("XADD", dead_stream, "*", *meta, *fields)
        await self._client.xack(stream, group, entry_id)
        return text(added)
""",
        tests=(f"{DEAD_LETTER}::test_an_entry_a_peer_claimed_is_not_dead_lettered",
               f"{DEAD_LETTER}::test_dead_letter_refused_half_way_leaves_no_copy"),
    ),
    Mutant(
        name="dead-letter-pipeline-without-multi",
        promise="copying a poison entry to the dead-letter stream and acking the original are one "
                "atomic step (here: pipelined without MULTI/EXEC)",
        path="edged/scripts.py",
        old="pipe = client.pipeline(transaction=True)",
        new="pipe = client.pipeline(transaction=False)",
        tests=(f"{DEAD_LETTER}::test_dead_letter_refused_half_way_leaves_no_copy",),
    ),
    Mutant(
        name="dead-letter-of-an-entry-a-peer-took",
        promise="a consumer acks only the entries it still owns: dead-lettering one a peer has "
                "claimed leaves it to the peer",
        path="edged/lua/dead_letter.lua",
        old="if not owned or #p == 0 then",
        new="if not owned then",
        tests=(f"{DEAD_LETTER}::test_an_entry_a_peer_claimed_is_not_dead_lettered",),
        fast=True,
    ),
    Mutant(
        name="dead-letter-acks-without-its-copy",
        promise="at-least-once: an entry is acked only once its dead-letter copy is written "
                "(the script checks the last entry is its copy)",
        path="edged/lua/dead_letter.lua",
        old="  if copy[2][i - 3] ~= ARGV[i] then",
        new="  if false then",
        tests=(f"{DEAD_LETTER}::test_an_entry_whose_copy_was_not_written_is_not_acked",),
    ),
    Mutant(
        name="dead-letter-ack-refused-keeps-the-copy",
        promise="an entry is never both dead-lettered and still pending: an ack the script "
                "cannot do takes the copy back",
        path="edged/lua/dead_letter.lua",
        old="  redis.call('XDEL', dead, copy[1])\n  return redis.error_reply(err.err or tostring(err))",
        new="  return redis.error_reply(err.err or tostring(err))",
        tests=(f"{DEAD_LETTER}::test_an_ack_refused_inside_the_script_leaves_no_copy",),
    ),
    Mutant(
        name="delete-consumer-script-ignores-pending",
        promise="dead consumers are removed only when they own nothing (checked in the script, "
                "in the same step as the delete)",
        path="edged/lua/delete_consumer.lua",
        old="if #redis.call('XPENDING', stream, group, '-', '+', 1, consumer) > 0 then\n"
            "  return 'pending'\nend\n",
        new="",
        tests=(f"{CLEANUP}::test_delete_script_refuses_a_consumer_that_owns_an_entry",
               f"{CLEANUP}::test_cleanup_refuses_a_consumer_that_got_an_entry_after_the_pass_checked_it"),
    ),
    Mutant(
        name="cleanup-deletes-consumers-that-own-entries",
        promise="dead consumers are removed only when they own nothing (here: neither the pass "
                "nor a script checks: a plain XGROUP DELCONSUMER)",
        path="edged/daemon/cleanup.py",
        old="""        if name == me or int(info.get("pending", 0)) > 0 """
            """or int(info.get("idle", 0)) < expiry_ms:
            continue
        try:
            if not await _dead(client, prefix, name, expiry_ms):
                continue
            verdict = await scripts.delete_consumer(stream, group, name, expiry_ms)
""",
        new="""        if name == me or int(info.get("idle", 0)) < expiry_ms:
            continue
        try:
            if not await _dead(client, prefix, name, expiry_ms):
                continue
            await client.xgroup_delconsumer(stream, group, name)
            verdict = "deleted"
""",
        tests=(f"{CLEANUP}::test_cleanup_keeps_a_dead_consumer_that_owns_an_entry",),
    ),
]
