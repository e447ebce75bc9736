"""Promise-breaking changes guarded by tests/test_guard_*.py (and a few existing tests).

Each entry was applied to a clean tree, its tests run and seen to fail, and the tree restored.
"""

from __future__ import annotations

from tests.mutants.mutant import Mutant

SECRETS = "tests/test_guard_secrets.py"
GROUP = "tests/test_guard_group.py"
RETRY = "tests/test_guard_retry.py"
LAST = "tests/test_delivery.py::test_handler_error_on_last_delivery_dead_letters"
BACKOFF = "tests/test_faults.py::test_retries_back_off_without_waiting_for_claim_idle"
FAILOVER = "tests/test_guard_failover.py::test_failover_drops_connections_to_a_paused_primary"

MUTANTS: list[Mutant] = [
    Mutant(
        name="startup-log-shows-url-password",
        promise="Passwords never appear in logs, errors or `edged config show`.",
        path="edged/daemon/run.py",
        old="        target = describe_target(self.config.redis, self.url)\n",
        new="        target = self.url or self.config.redis.url or 'redis://127.0.0.1:6379/0'\n",
        tests=(f"{SECRETS}::test_password_in_url_never_reaches_the_logs",),
        fast=True,
    ),
    Mutant(
        name="describe-target-unredacted",
        promise="Passwords never appear in logs, errors or `edged config show`.",
        path="edged/connect/client.py",
        old="    return redact_url(url or cfg.url or DEFAULT_REDIS_URL)\n",
        new="    return url or cfg.url or DEFAULT_REDIS_URL\n",
        tests=(f"{SECRETS}::test_password_in_url_stays_hidden_when_redis_is_unavailable",),
    ),
    Mutant(
        name="lost-group-recreated-at-start-id",
        promise="If the promoted replica has no group (NOGROUP), edged recreates it just before "
                "the oldest entry it knew pending, never at `$`: none is skipped.",
        path="edged/consume/group.py",
        old="        await self.ensure_until_ok(start_id=floor)\n",
        new="        await self.ensure_until_ok()\n",
        tests=(f"{GROUP}::test_lost_group_started_at_dollar_is_recreated_without_skipping",),
    ),
    Mutant(
        name="waiting-retries-not-leased",
        promise="Retries back off: a failed entry is leased until its retry is due, so a peer "
                "does not take it early.",
        path="edged/consume/ownership.py",
        old="            ids += s.retries.ids()\n",
        new="",
        tests=(f"{RETRY}::test_waiting_retry_keeps_its_lease_until_due",),
    ),
    Mutant(
        name="stop-forgets-waiting-retries",
        promise="Shutdown hands work back: unstarted and retry-waiting entries are handed back "
                "for a peer to take at once.",
        path="edged/consume/consumer.py",
        old=('        await self._ownership.release_waiting_retries(float("inf"), '
             'why="waiting to retry")\n'),
        new="",
        tests=(f"{RETRY}::test_stop_hands_a_waiting_retry_to_a_peer_at_once",),
        fast=True,
    ),
    Mutant(
        name="handed-back-retry-burns-a-delivery",
        promise="Shutdown hands work back: retry-waiting entries are handed back as they are "
                "(their delivery count unchanged).",
        path="edged/consume/ownership.py",
        old="[(entry_id, delivery + 1) for entry_id, delivery in due]",
        new="[(entry_id, delivery) for entry_id, delivery in due]",
        tests=(f"{RETRY}::test_stop_hands_a_waiting_retry_to_a_peer_at_once",),
    ),
    Mutant(
        name="switch-master-keeps-old-connections",
        promise="edged drops every connection to the old primary the moment a failover is "
                "announced (+switch-master).",
        path="edged/daemon/run.py",
        old="        await self.client.connection_pool.disconnect()\n",
        new="",
        tests=(FAILOVER,),
    ),
    Mutant(
        name="switch-master-drops-only-idle-connections",
        promise="edged drops every connection to the old primary the moment a failover is "
                "announced, the reader's own (in use by a blocking read) included.",
        path="edged/daemon/run.py",
        old="        await self.client.connection_pool.disconnect()\n",
        new="        await self.client.connection_pool.disconnect(inuse_connections=False)\n",
        tests=(FAILOVER,),
    ),
    Mutant(
        name="switch-master-announcements-ignored",
        promise="edged subscribes to +switch-master on every sentinel and follows a failover "
                "at once.",
        path="edged/connect/sentinel.py",
        old="        if len(parts) != 5 or parts[0] != self.cfg.service:\n",
        new="        if len(parts) != 5 or parts[1] != self.cfg.service:\n",
        tests=(FAILOVER,),
    ),
    Mutant(
        name="last-delivery-failure-retried-not-dead-lettered",
        promise="Poison entries end in the dead-letter stream: any other failure on delivery "
                "`max-deliveries` (dead-lettered at once, with that delivery count).",
        path="edged/consume/outcomes.py",
        old="        if delivery >= self._max_deliveries:\n",
        new="        if delivery > self._max_deliveries:\n",
        tests=(LAST, BACKOFF),
    ),
    Mutant(
        name="last-allowed-delivery-not-run",
        promise="Any other failure is retried until delivery `max-deliveries`: the last allowed "
                "delivery runs the handler.",
        path="edged/consume/outcomes.py",
        old="delivery > self._max_deliveries or (s.lost",
        new="delivery >= self._max_deliveries or (s.lost",
        tests=(LAST, BACKOFF,
               "tests/test_guard_max_deliveries.py::test_the_last_allowed_delivery_still_runs"),
    ),
    Mutant(
        name="leases-renewed-only-every-claim-idle",
        promise="Long handlers keep their lease (renewed every quarter of claim-idle), and so do "
                "entries waiting for a retry.",
        path="edged/consume/ownership.py",
        old="        interval = max(0.025, s.cfg.claim_idle.seconds / 4)\n",
        new="        interval = max(0.025, s.cfg.claim_idle.seconds)\n",
        # Only the long handler's test kills it for sure: renewed every claim-idle, a waiting
        # retry is taken early only now and then.
        tests=("tests/test_faults.py::test_long_handler_keeps_its_lease",),
    ),
    Mutant(
        name="stop-hands-back-only-due-retries",
        promise="Shutdown hands work back: retry-waiting entries (due or not) are handed back for "
                "a peer to take at once.",
        path="edged/consume/consumer.py",
        old='release_waiting_retries(float("inf"), why="waiting to retry")',
        new='release_waiting_retries(anyio.current_time(), why="waiting to retry")',
        tests=(f"{RETRY}::test_stop_hands_a_waiting_retry_to_a_peer_at_once",),
    ),
    Mutant(
        name="sync-handlers-behind-a-blocking-one-wait",
        promise="up to `concurrency` sync handlers run at once: events waiting behind busy "
                "threads get threads of their own",
        path="edged/handlers/threads.py",
        old="            self._wake_locked(waited)\n",
        new="            self._wake_locked(0)\n",
        tests=("tests/test_sync_handlers.py::"
               "test_blocking_sync_handlers_run_concurrency_at_once_and_never_more",),
    ),
    Mutant(
        name="cancelled-sync-handler-abandoned",
        promise="a worker cancelled (lost lease, grace end) while its sync handler runs waits for "
                "the handler and leaves the entry pending",
        path="edged/handlers/threads.py",
        old="                future.exception()  # the outcome is dropped: do not report it as "
            "unretrieved\n            raise\n",
        new="                future.exception()  # the outcome is dropped: do not report it as "
            "unretrieved\n            return None\n",
        tests=("tests/test_sync_handlers.py::test_a_cancelled_caller_waits_for_its_running_handler",),
    ),
]
