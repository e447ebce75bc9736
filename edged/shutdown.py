"""The shutdown budget, in one place: what systemd's TimeoutStopSec must cover.

On SIGTERM the daemon stops reading; running handlers get ``[daemon] shutdown-grace``; then one
bounded clean-up phase hands back what was fetched and never started, flushes the last acks,
lets the outbox's batch in flight finish and ends the heartbeat record.
``systemd/edged.service`` sets TimeoutStopSec above ``shutdown-grace + CLEANUP_BUDGET`` (a test
checks it against the defaults).
"""

HAND_BACK_AND_FLUSH = 8.0
"""Seconds each stream gets, after its handlers, to hand back entries and flush its acks
(streams clean up in parallel). What is not done by then stays pending: peers take it after
claim-idle."""

OUTBOX_SETTLE = 3.0
"""Seconds the outbox's batch in flight gets to be forwarded and removed from the file, so a
clean stop sends nothing twice. Cut short, the batch stays in the file and is sent again."""

END_HEARTBEAT = 2.0
"""Seconds to remove the heartbeat record, so peers see this daemon gone at once."""

CLEANUP_BUDGET = HAND_BACK_AND_FLUSH + OUTBOX_SETTLE + END_HEARTBEAT
