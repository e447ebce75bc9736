"""The raw baseline for a sharded stream: one plain redis-py loop per shard, in one process.

``python -m bench.raw_sharded (--nodes HOST:PORT,... | --url URL) --streams S1,S2,... --group G``.
Each shard gets its own task doing what ``bench.raw`` does for one stream: XREADGROUP COUNT
500 BLOCK 1000 ``>``, then one XACK of the batch's ids, in sequence; no decoding, no handler.
With ``--nodes`` the client is redis-py's asyncio ``RedisCluster`` (hiredis), which routes each
command to the primary owning the shard's slot; with ``--url`` a plain ``Redis`` client. Runs
until SIGTERM (the harness stops it once every shard's group is drained).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from bench.raw import ReadReply


async def consume_one(client: Any, stream: str, group: str, consumer: str, count: int) -> None:
    while True:
        reply = await client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=1000)
        # RESP2, redis-py's default protocol: [[stream, [(id, fields), ...]]].
        for _name, entries in cast(ReadReply, reply):
            if entries:
                await client.xack(stream, group, *(entry_id for entry_id, _ in entries))


def make_client(args: argparse.Namespace) -> Any:
    if args.url:
        return aioredis.Redis.from_url(args.url)
    seeds = []
    for node in args.nodes.split(","):
        host, _, port = node.rpartition(":")
        seeds.append(ClusterNode(host, int(port)))
    return RedisCluster(startup_nodes=seeds)


async def main_async(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels the loops so the connections are closed and the exit code is 0.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    client = make_client(args)
    try:
        if isinstance(client, RedisCluster):
            # Learn the slots before the readers start. A RedisCluster that has not been
            # initialized routes commands to a random node (redis-py 8: no default node yet, so
            # its command policy falls back to keyless); six readers starting at once then
            # draw MOVED replies, and every fifth MOVED makes the client close all its
            # connections, under the other readers' in-flight XREADGROUPs: their replies are
            # lost, the entries stay pending, and the drain never ends.
            await client.initialize()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.TaskGroup() as tasks:
                for stream in args.streams.split(","):
                    tasks.create_task(consume_one(client, stream, args.group, args.consumer, args.count))
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_sharded", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--nodes", help="cluster seed nodes, host:port,host:port,...")
    where.add_argument("--url", help="one server")
    parser.add_argument("--streams", required=True, help="the shards, comma-separated")
    parser.add_argument("--group", required=True)
    parser.add_argument("--consumer", default="bench-1")
    parser.add_argument("--count", type=int, default=500)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
