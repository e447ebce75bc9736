"""The raw loop of ``bench.raw``, recording each entry's latency when its batch arrives.

``python -m bench.raw_latency --url ... --stream ... --group ... --out FILE``:
``XREADGROUP COUNT 500 BLOCK 1000 >``, then one XACK of the batch's ids, in sequence. For every
entry it keeps (published ns, arrival ns of its batch), ``payload["t"]`` being the publisher's
``time.time_ns()``. SIGTERM stops it after its current read; the pairs then go to ``--out`` as
int64s, in the format of ``bench.handlers.latency``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from array import array
from typing import cast

import redis.asyncio as aioredis

from bench.raw import ReadReply


async def consume(
    url: str, stream: str, group: str, consumer: str, count: int, seen: array[int], stop: asyncio.Event
) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        while not stop.is_set():
            reply = await client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=1000)
            now = time.time_ns()
            for _name, entries in cast(ReadReply, reply):
                for _id, fields in entries:
                    seen.append(json.loads(fields[b"payload"])["t"])
                    seen.append(now)
                if entries:
                    await client.xack(stream, group, *(entry_id for entry_id, _ in entries))
    finally:
        await client.aclose()


async def main_async(args: argparse.Namespace, seen: array[int]) -> None:
    # SIGTERM ends the loop after its current read (at most the 1 s BLOCK) instead of cancelling
    # it: cancelling once left the loop running past the harness's 30 s grace (cause not pinned
    # down), and a SIGKILLed consumer never writes its samples.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consume(args.url, args.stream, args.group, args.consumer, args.count, seen, stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_latency", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--consumer", default="bench-1")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    seen: array[int] = array("q")
    asyncio.run(main_async(args, seen))
    with open(f"{args.out}.tmp", "wb") as f:
        seen.tofile(f)
    os.replace(f"{args.out}.tmp", args.out)


if __name__ == "__main__":
    main()
