"""Writing entries in edged's shape: the body in ``payload``, other fields as metadata.

``publish`` adds to one stream. ``publish_sharded`` adds to a logical stream of N shards: an
entry with a key goes to ``shard_for_key(key, N)`` (sharding.py; stable across languages), so
entries of one key stay in one shard, in publish order; entries without a key go round-robin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edged.errors import EdgedError
from edged.keys import PAYLOAD_FIELD
from edged.sharding import RoundRobin, shard_for_key, shard_names

PIPELINE_CHUNK = 1000
# Redirects followed for one chunk on a cluster before giving up: a slot moves at most a few
# times while a chunk is sent, even during a resharding.
MAX_REDIRECTS = 5

_round_robin = RoundRobin()


class NotReplicated(EdgedError):
    """Fewer replicas than asked acknowledged the entries within the timeout.

    The entries are on the primary; if it fails before they reach a replica, a failover can
    lose them. ``ids`` are the entries this concerns.
    """

    def __init__(self, message: str, ids: list[str]) -> None:
        super().__init__(message)
        self.ids = ids


class Published(NamedTuple):
    stream: str
    """The physical stream (the shard) the entry went to."""
    id: str


async def publish(
    client: Redis,
    stream: str,
    payloads: Iterable[bytes],
    *,
    fields: Mapping[str, bytes] | None = None,
    maxlen: int | None = None,
    wait_replicas: int = 0,
    wait_timeout: float = 1.0,
) -> list[str]:
    """XADD one entry per payload, pipelined; returns the new ids in order.

    ``maxlen`` trims approximately (``MAXLEN ~``), which Redis does cheaply per macro node.
    With ``wait_replicas`` each pipelined chunk ends with WAIT on the same connection, so
    every entry returned has reached that many replicas; else NotReplicated is raised.
    """
    extra = dict(fields or {})
    return await add_entries(client, stream, ({**extra, PAYLOAD_FIELD: body} for body in payloads),
                             maxlen=maxlen, wait_replicas=wait_replicas, wait_timeout=wait_timeout)


async def add_entries(
    client: Redis,
    stream: str,
    entries: Iterable[Mapping[str, bytes]],
    *,
    maxlen: int | None = None,
    wait_replicas: int = 0,
    wait_timeout: float = 1.0,
) -> list[str]:
    """XADD each entry (its whole field map), pipelined by PIPELINE_CHUNK; the new ids in order.

    A chunk that fails raises, and entries of earlier chunks are in the stream already.
    """
    ids: list[str] = []
    chunk: list[Mapping[str, bytes]] = []

    async def flush() -> None:
        commands = [_xadd(stream, entry, maxlen) for entry in chunk]
        if wait_replicas and isinstance(client, RedisCluster):
            new, acked = await _add_and_wait_on_owner(client, stream, commands, wait_replicas,
                                                      wait_timeout)
        else:
            new, acked = await _add_pipelined(client, commands, wait_replicas, wait_timeout)
        if wait_replicas and acked < wait_replicas:
            raise NotReplicated(
                f"only {acked} of {wait_replicas} replicas acknowledged {len(new)} entries "
                f"within {wait_timeout:g}s; they are on the primary but a failover could "
                f"lose them (first {new[0]}, last {new[-1]})",
                ids + new,
            )
        ids.extend(new)
        chunk.clear()

    for entry in entries:
        chunk.append(entry)
        if len(chunk) >= PIPELINE_CHUNK:
            await flush()
    if chunk:
        await flush()
    return ids


async def add_atomically(
    client: Redis,
    stream: str,
    entries: Sequence[Mapping[str, bytes]],
    *,
    wait_replicas: int = 0,
    wait_timeout: float = 1.0,
) -> tuple[list[str], int]:
    """XADD the entries in one MULTI/EXEC (all of them or none), then WAIT on the same
    connection; (the new ids, how many replicas acknowledged them; 0 without WAIT).

    All or none: a pipeline half refused (OOM on the 201st of 500) and then sent again would
    put the first 200 in the stream twice, and the rest out of order. The outbox forwards with
    this. On a cluster all of it goes to the primary of the stream's slot; a slot that moved
    fails the whole batch (the map is learned again for the next try).
    """
    sent: list[list[Any]] = [["MULTI"], *(_xadd(stream, e, None) for e in entries), ["EXEC"]]
    if wait_replicas:
        sent.append(["WAIT", wait_replicas, int(wait_timeout * 1000)])
    if isinstance(client, RedisCluster):
        await client.initialize()
        node = client.get_node_from_key(stream)
        if node is None:
            raise EdgedError(f"no cluster node serves the slot of {stream!r}")
        try:
            replies = await _exchange_on_node(node, sent)
        except (RedisConnectionError, RedisTimeoutError):
            await _relearn(client)
            raise
    else:
        pool = client.connection_pool
        connection = await pool.get_connection()
        try:
            replies = await _exchange(connection, sent)
        finally:
            await pool.release(connection)
    executed = replies[len(entries) + 1]
    failed = next((r for r in [*replies[:len(entries) + 1], executed] if isinstance(r, Exception)),
                  None)
    if failed is None and isinstance(executed, list):
        failed = next((r for r in executed if isinstance(r, Exception)), None)
    if failed is not None:
        if isinstance(client, RedisCluster) and isinstance(failed, AskError | ResponseError):
            await _relearn(client)
        raise failed
    acked = int(replies[-1]) if wait_replicas and not isinstance(replies[-1], Exception) else 0
    return [_text(r) for r in executed], acked


async def _exchange(connection: Any, sent: list[list[Any]]) -> list[Any]:
    """Send ``sent`` on one connection; each reply, error replies as values."""
    try:
        await connection.send_packed_command(connection.pack_commands(sent))
        replies: list[Any] = []
        for _ in sent:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        await connection.disconnect()  # replies may be left unread on it
        raise
    return replies


async def _exchange_on_node(node: Any, sent: list[list[Any]]) -> list[Any]:
    connection = node.acquire_connection()
    try:
        return await _exchange(connection, sent)
    finally:
        node.release(connection)


async def publish_sharded(
    client: Redis,
    stream: str,
    shards: int,
    payloads: Iterable[bytes],
    *,
    key: str | bytes | None = None,
    **options: Any,
) -> list[Published]:
    """Publish to the logical ``stream`` of ``shards`` shards; each entry's shard and id.

    With ``key`` every entry goes to the key's shard, in order; without, they spread evenly.
    ``options`` are ``publish``'s (fields, maxlen, wait_replicas, wait_timeout).
    """
    names = shard_names(stream, shards)
    bodies = list(payloads)
    if key is not None:
        picks = [shard_for_key(key, shards)] * len(bodies)
    else:
        picks = [_round_robin.next_shard(shards) for _ in bodies]
    by_shard: dict[int, list[int]] = {}
    for position, shard in enumerate(picks):
        by_shard.setdefault(shard, []).append(position)
    out: list[Published | None] = [None] * len(bodies)
    for shard, positions in sorted(by_shard.items()):
        ids = await publish(client, names[shard], [bodies[p] for p in positions], **options)
        for position, entry_id in zip(positions, ids, strict=True):
            out[position] = Published(names[shard], entry_id)
    return [p for p in out if p is not None]


def _xadd(stream: str, entry: Mapping[str, bytes], maxlen: int | None) -> list[Any]:
    command: list[Any] = ["XADD", stream]
    if maxlen is not None:
        command += ["MAXLEN", "~", maxlen]
    command.append("*")
    for name, value in entry.items():
        command += [name, value]
    return command


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


async def _add_pipelined(client: Redis, commands: list[list[Any]], wait_replicas: int,
                         wait_timeout: float) -> tuple[list[str], int]:
    """The XADDs in one pipeline, then WAIT on the same connection; (ids, replicas acked)."""
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        if wait_replicas:
            pipe.execute_command("WAIT", wait_replicas, int(wait_timeout * 1000))
        replies = await pipe.execute()
    acked = int(replies.pop()) if wait_replicas else 0
    return [_text(r) for r in replies], acked


async def _add_and_wait_on_owner(client: RedisCluster, stream: str, commands: list[list[Any]],
                                 wait_replicas: int, wait_timeout: float) -> tuple[list[str], int]:
    """On a cluster: the XADDs and WAIT on one connection to the stream's primary.

    WAIT counts the writes of its own connection, and names no key, so the cluster client would
    send it to any node; here both go to the node owning the stream's slot. A slot that moved
    answers MOVED or ASK for the entries not written: those are sent again to the new owner
    (ASKING first for ASK), with their own WAIT. The fewest replicas any part reached counts.
    """
    ids: list[str] = []
    acked = wait_replicas
    await client.initialize()  # learns the slots on first use (or after a connection error)
    node = client.get_node_from_key(stream)
    asking = False
    for _ in range(MAX_REDIRECTS):
        if node is None:
            raise EdgedError(f"no cluster node serves the slot of {stream!r}")
        try:
            replies = await _send_on_one_connection(
                node, commands, wait_replicas, int(wait_timeout * 1000), asking)
        except (RedisConnectionError, RedisTimeoutError):
            # The node may be dead and its replica promoted: the next publish asks the cluster
            # again (the client does this itself only for the commands it sends).
            await _relearn(client)
            raise
        adds, waited = replies[:-1], replies[-1]
        refused = next((i for i, r in enumerate(adds) if isinstance(r, Exception)), len(adds))
        ids += [_text(r) for r in adds[:refused]]
        if refused:
            if isinstance(waited, Exception):
                raise waited
            acked = min(acked, int(waited))
        commands = commands[refused:]
        if not commands:
            return ids, acked
        error = adds[refused]
        if not isinstance(error, AskError):  # MovedError is an AskError too
            raise error
        asking = not isinstance(error, MovedError)
        if not asking:
            await _relearn(client)
        node = client.get_node(host=error.host, port=error.port) or client.get_node_from_key(stream)
    raise EdgedError(f"{stream!r}: its slot moved more than {MAX_REDIRECTS} times while "
                     "publishing; nothing more was sent")


async def _relearn(client: RedisCluster) -> None:
    """Ask the cluster again which node owns which slot; an unreachable cluster is left for
    the next command to report."""
    with contextlib.suppress(RedisConnectionError, RedisTimeoutError, RedisClusterException):
        await client.nodes_manager.initialize()


async def _send_on_one_connection(node: Any, commands: list[list[Any]], wait_replicas: int,
                                  wait_ms: int, asking: bool) -> list[Any]:
    """``commands`` then WAIT on one connection of ``node``; each reply, errors as values.

    After ASK every command needs its own ASKING (the flag lasts one command); their OKs are
    dropped from the replies.
    """
    sent: list[list[Any]] = []
    for command in commands:
        sent += [["ASKING"], command] if asking else [command]
    sent.append(["WAIT", wait_replicas, wait_ms])
    # Errors come back as values: MOVED, ASK; WAIT on a node no longer primary.
    replies = await _exchange_on_node(node, sent)
    if asking:
        return [*replies[1:-1:2], replies[-1]]
    return replies
