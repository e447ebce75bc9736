"""The least-privilege ACL rules edged needs, kept here so README.md and the tests agree.

Each rule is the command part of `ACL SETUSER <user> on ><password> <keys> <rule>`: no
`+@all`, no `+@dangerous`, only the commands edged sends (including those its Lua scripts call,
which ACLs check too). Key patterns are the operator's: the daemon needs its streams (and their
dead-letter streams) and the `edged:` prefix.
"""

from __future__ import annotations

# Sent on connect (edged tells redis-py not to send CLIENT SETINFO, which Redis 7.0 lacks).
_CONNECT = "+ping +client|setname"

DAEMON = (
    f"-@all {_CONNECT} +info +role"
    # reading, acking, reclaiming, leasing, releasing, recreating a lost group
    " +xreadgroup +xack +xclaim +xautoclaim +xpending +xinfo|groups +xinfo|consumers"
    " +xgroup|create +xgroup|delconsumer +xadd"
    # the scripts (fenced ack, lease, dead letter, release, heartbeat, safe delete); a dead
    # letter is an XADD and a script in one MULTI/EXEC, the script checks and undoes the copy
    " +eval +evalsha +script|load +multi +exec +xrevrange +xdel"
    # heartbeat record and last-seen hash, from the heartbeat scripts
    " +hset +hget +hgetall +del +pexpire +exists +time"
    # retention: the trim lease (SET NX PX, GET, PEXPIRE) and the trim script
    " +set +get +xtrim +xlen +xrange"
    # the outbox forwards with XADD (above), then WAIT when wait-replicas is set
    " +wait"
)

INSPECT = (
    f"-@all {_CONNECT} +info +time +scan +type +xinfo|groups +xinfo|consumers +xinfo|stream +xpending"
    " +xlen +xrange +xrevrange +hgetall +hget +hscan"
    # the retention probe of `edged groups` and `edged trim --dry-run`: the trim script run
    # read-only (a write in it would fail)
    " +eval_ro +evalsha_ro"
    # --all: each stream's memory (an estimate)
    " +memory|usage"
)

OPERATE = (
    f"{INSPECT} +xadd +wait +xclaim +xack +xdel +xtrim +eval +evalsha +script|load"
    # dlq replay: the XADD and its check script go in one MULTI/EXEC
    " +multi +exec"
    # group create / set-id / delete, consumer delete; pause / resume (a hash of edged's)
    " +xgroup|create +xgroup|setid +xgroup|destroy +xgroup|delconsumer +hset +hdel"
)

# Added to each rule above on a Redis Cluster: redis-py learns the slots with CLUSTER SLOTS,
# where each command's keys are with COMMAND (read-only metadata), and follows a slot being
# migrated with ASKING. Key patterns there: `{edged}:*` instead of `edged:*`, and
# `{<stream>}:dead` dead-letter streams.
CLUSTER = "+cluster|slots +command +asking"

# For the sentinels' own ACL user (redis-py asks SENTINEL MASTERS; edged subscribes to
# +switch-master, so the channel must be allowed: `resetchannels &+switch-master`).
SENTINEL = (
    f"-@all {_CONNECT} +sentinel|masters +sentinel|get-master-addr-by-name +subscribe"
)


def setuser_args(user: str, password: str, keys: str, rule: str) -> list[str]:
    """ACL SETUSER arguments for a user with ``rule`` on ``keys`` (space-separated patterns)."""
    return [user, "reset", "on", f">{password}", *keys.split(), "resetchannels", *rule.split()]
