"""The baseline: the plainest asyncio redis-py (hiredis) consumer-group loop.

``python -m bench.raw --url ... --stream ... --group ...``. It reads batches with XREADGROUP and
acks each batch with one XACK; no decoding, no concurrency: an upper bound for one connection.
Runs until SIGTERM (the harness stops it once the group is drained).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any, cast

import redis.asyncio as aioredis

ReadReply = list[tuple[bytes, list[tuple[bytes, Any]]]]


async def consume(url: str, stream: str, group: str, consumer: str, count: int) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        while True:
            reply = await client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=1000)
            # RESP2, redis-py's default protocol: [[stream, [(id, fields), ...]]].
            for _name, entries in cast(ReadReply, reply):
                if entries:
                    await client.xack(stream, group, *(entry_id for entry_id, _ in entries))
    finally:
        await client.aclose()


async def main_async(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels the loop so the connection is closed and the exit code is 0.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await consume(args.url, args.stream, args.group, args.consumer, args.count)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--consumer", default="bench-1")
    parser.add_argument("--count", type=int, default=500)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
