"""Redis Cluster: one client for every primary, found from seed nodes.

redis-py's RedisCluster follows MOVED and ASK redirects itself and, after a connection error,
relearns the topology on the next command. edged turns its own retries off there, as for one
server: a retried XADD could publish twice, a retried blocking read hides the stop flag. So a
node that dies surfaces as a connection error, every loop of edged backs off and retries as
it does in a Sentinel failover, and the retry lands on the promoted replica.
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from edged.config import RedisConfig, split_host_port
from edged.connect.auth import tls_kwargs
from edged.connect.transient import FailoverAwareParser

# Options of a single-server client that RedisCluster does not take (it has only database 0
# and builds its own connection classes).
_SINGLE_SERVER_ONLY = ("db", "parser_class", "retry")


def _stream_read_keys(command: str, args: tuple[Any, ...]) -> list[Any]:
    """The stream keys of an XREADGROUP or XREAD, by their syntax; [] for anything else.

    Options are skipped by position (``GROUP g c``, ``COUNT n``, ``BLOCK ms``, ``NOACK``), so
    a group or consumer that happens to be named "streams" is not taken for the keyword.
    """
    name = command.upper() if isinstance(command, str) else ""
    if name not in ("XREADGROUP", "XREAD"):
        return []
    i = 3 if name == "XREADGROUP" else 0
    while i < len(args):
        word = args[i].upper() if isinstance(args[i], str) else ""
        if word in ("COUNT", "BLOCK"):
            i += 2
        elif word == "NOACK":
            i += 1
        elif word == "STREAMS":
            rest = args[i + 1:]
            return list(rest[: len(rest) // 2])
        else:
            return []
    return []


def make_cluster_client(cfg: RedisConfig, primary_kwargs: dict[str, Any]) -> Redis:
    """A client of the cluster named by ``[redis.cluster] nodes``.

    Typed as ``Redis``: edged uses only commands both clients share (per-key commands, scripts
    whose keys share a slot, pipelines), so the rest of the code has one client type.
    """
    assert cfg.cluster is not None
    kwargs = {k: v for k, v in primary_kwargs.items() if k not in _SINGLE_SERVER_ONLY}
    if cfg.tls is not None:
        kwargs["ssl"] = True
        kwargs.update(tls_kwargs(cfg.tls))
    seeds = [ClusterNode(*split_host_port(node)) for node in cfg.cluster.nodes]
    client = _Cluster(
        startup_nodes=seeds,
        retry=Retry(NoBackoff(), 0),
        # A slot without a primary (its node died, no replica promoted yet) is reported on the
        # command that needs it, not refused for the whole client: other shards go on.
        require_full_coverage=False,
        # The configured seeds stay the seeds: redis-py would otherwise replace them with the
        # nodes it discovered, and after a discovery against a cluster that served no slot yet
        # it was left with none to ask again (found by a test starting the daemon first).
        dynamic_startup_nodes=False,
        # A MOVED updates that one slot. redis-py would otherwise relearn every slot on each
        # 5th MOVED, dropping the connections that other readers' blocking reads are using;
        # a full relearn still follows any connection error (a node gone).
        reinitialize_steps=0,
        **kwargs,
    )
    _use_failover_parser(client)
    client.nodes_manager.__class__ = _Nodes
    return cast(Redis, client)


class _Cluster(RedisCluster):
    """RedisCluster whose topology discovery fails only with Redis errors.

    redis-py learns the slots on the first command (and after a connection error). Against
    nodes that answer but serve no slot yet (a cluster being formed, or every primary lost)
    it fails with an IndexError or the like, which no caller would take for "Redis is away":
    the daemon would exit. Here it is a RedisClusterException, which edged retries.
    """

    async def _determine_slot(self, command: str, *args: Any) -> int:
        """XREADGROUP's keys follow STREAMS: found here, where redis-py would ask the server
        (COMMAND GETKEYS, twice) before every read, the reader's hot path."""
        keys = _stream_read_keys(command, args)
        if isinstance(command, str) and command.upper() in ("EVAL_RO", "EVALSHA_RO") and args:
            keys = list(args[2: 2 + int(args[1])])  # as redis-py does for EVAL and EVALSHA
        if keys:
            slots = {self.keyslot(key) for key in keys}
            if len(slots) == 1:
                return slots.pop()
        return await super()._determine_slot(command, *args)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except SlotNotCoveredError:
            # Raised while picking the node, where redis-py does not mark its slot map stale:
            # a map learned from a cluster still forming would then be kept for good. Closing
            # makes the next command learn the slots again.
            await self.aclose()
            raise

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise RedisClusterException(f"the cluster has no usable slot map yet ({exc!r})") from exc


class _Nodes(NodesManager):
    """redis-py's slot map, where a slot no node serves yet (a cluster still being formed) is
    SlotNotCoveredError, a retry, as redis-py means it to be: it looks the slot up in a dict
    and catches only IndexError and TypeError, so a KeyError ended the daemon."""

    __slots__ = ()

    def get_node_from_slot(self, slot: int, *args: Any, **kwargs: Any) -> ClusterNode:
        try:
            return super().get_node_from_slot(slot, *args, **kwargs)
        except KeyError:
            raise SlotNotCoveredError(f'Slot "{slot}" is not covered by the cluster') from None


def _use_failover_parser(client: RedisCluster) -> None:
    """Have every node connection raise UNBLOCKED/MASTERDOWN as connection errors, as a single
    server's do (transient.py): a primary demoted under a blocking read answers UNBLOCKED."""
    client.nodes_manager.connection_kwargs["parser_class"] = FailoverAwareParser
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_kwargs["parser_class"] = FailoverAwareParser
