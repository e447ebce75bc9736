"""Which Redis errors mean "wait, reconnect, go on", and the parser that makes them so.

redis-py returns UNBLOCKED, NOREPLICAS and MASTERDOWN (a failover in progress) as plain
ResponseErrors. edged's clients use ``FailoverAwareParser``, which raises ``FailoverError`` (a
connection error) for them instead: redis-py then drops the connection, and every loop of edged
treats them like any other outage. Only clients made by ``edged.connect`` use this parser; other
clients in the same process (a handler's own) keep redis-py's behaviour.
"""

from __future__ import annotations

from redis.asyncio.connection import DefaultParser
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ClusterDownError,
    ClusterError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

FAILOVER_CODES = ("UNBLOCKED", "NOREPLICAS", "MASTERDOWN")


class FailoverError(RedisConnectionError):
    """Redis answered that it is in the middle of a failover (UNBLOCKED, NOREPLICAS, MASTERDOWN)."""


class FailoverAwareParser(DefaultParser):  # type: ignore[misc,valid-type]
    """redis-py's default parser, with the failover replies raised as ``FailoverError``."""

    EXCEPTION_CLASSES = {
        **DefaultParser.EXCEPTION_CLASSES,
        **dict.fromkeys(FAILOVER_CODES, FailoverError),
    }


# Errors after which the right move is "wait, reconnect, go on". READONLY: we are talking to a
# replica (the old primary after a failover); the next connection finds the new primary.
# On a cluster: CLUSTERDOWN and a slot with no primary (a failover in progress), TRYAGAIN (a
# multi-key command during a slot migration), too many redirects (ClusterError) and no seed
# node answering (RedisClusterException); the client relearns the topology on the next command.
CLUSTER_TRANSIENT_ERRORS = (ClusterDownError, TryAgainError, SlotNotCoveredError, ClusterError,
                            RedisClusterException)
# Redis refused the user: a wrong password (WRONGPASS, NOAUTH: an AuthenticationError is a
# ConnectionError to redis-py, so test for these first) or an ACL that denies a command
# (NOPERM). Retrying may still help (a password file gets fixed, an ACL granted), but they are
# errors to report as such, never as an outage.
AUTH_ERRORS = (AuthenticationError, AuthenticationWrongNumberOfArgsError, NoPermissionError)
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError,
                    *CLUSTER_TRANSIENT_ERRORS)
