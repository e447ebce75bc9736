"""Handlers the tests configure; they record what they ran into Redis so tests can check it.

The payload steers them: {"sleep": s}, {"fail": true}, {"reject": "why"}, {"retry": true},
{"hang": true} (until the key <stream>:release exists), {"exit": n} (sys.exit(n)),
{"cancel-self": true} (raise CancelledError), {"reject-surrogate": true} (a reason that is not
valid UTF-8), {"track": "<key>"} (count the runs in progress in <key> and keep the highest
count seen in <key>:max, to check a concurrency bound), {"order": "<key>"} (push the stream's
name to the list <key> when the run starts: one order over several streams). An entry with an
``edged-msgid`` (published through an outbox) has Event.msgid pushed to <stream>:msgids. Every
run is recorded as
"<id> <consumer> <delivery>" in the list <stream>:handled once the handler finished, and in
<stream>:started when it started.
"""

from __future__ import annotations

import asyncio
import os

import anyio
import redis.asyncio as aioredis

from edged import Event, Reject, Retry

_clients: dict[str, aioredis.Redis] = {}


def _client() -> aioredis.Redis:
    url = os.environ["EDGED_TEST_REDIS"]
    if url not in _clients:
        _clients[url] = aioredis.Redis.from_url(url)
    return _clients[url]


def _me() -> str:
    return os.environ.get("EDGED_TEST_CONSUMER", "?")


async def record(event: Event) -> None:
    r = _client()
    mark = f"{event.id} {_me()} {event.delivery}"
    await r.rpush(f"{event.stream}:started", mark)
    if event.msgid is not None:
        await r.rpush(f"{event.stream}:msgids", event.msgid)
    body = event.payload if isinstance(event.payload, dict) else {}
    if body.get("order"):
        await r.rpush(str(body["order"]), event.stream)
    track = body.get("track")
    if track:
        running = await r.incr(track)
        await r.eval(_KEEP_MAX, 1, f"{track}:max", running)
    try:
        await _steered(r, event, body, mark)
    finally:
        if track:
            await r.decr(track)


# Keep the highest value seen: one script, so two runs starting at once cannot lose a maximum.
_KEEP_MAX = """
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > seen then redis.call('SET', KEYS[1], ARGV[1]) end
"""


async def _steered(r: aioredis.Redis, event: Event, body: dict, mark: str) -> None:  # type: ignore[type-arg]
    if body.get("sleep"):
        await anyio.sleep(float(body["sleep"]))
    if body.get("hang"):
        while not await r.exists(f"{event.stream}:release"):  # noqa: ASYNC110 - polls Redis
            await anyio.sleep(0.05)
    if body.get("fail"):
        await r.rpush(f"{event.stream}:failed", mark)
        raise RuntimeError("told to fail")
    if body.get("reject"):
        raise Reject(str(body["reject"]))
    if body.get("exit"):
        raise SystemExit(int(body["exit"]))
    if body.get("cancel-self"):  # a CancelledError of the handler's own, not edged's
        raise asyncio.CancelledError("the handler's own")
    if body.get("reject-surrogate"):  # text decoded with surrogateescape: not valid UTF-8
        raise Reject("bad " + b"\xff".decode("utf-8", "surrogateescape"))
    if body.get("retry"):
        await r.rpush(f"{event.stream}:failed", mark)
        raise Retry("told to retry")
    await r.rpush(f"{event.stream}:handled", mark)


def record_sync(event: Event) -> None:
    import threading

    import redis as syncredis

    r = syncredis.Redis.from_url(os.environ["EDGED_TEST_REDIS"])
    thread = threading.current_thread().name
    r.rpush(f"{event.stream}:handled", f"{event.id} {_me()} {event.delivery} {thread}")
    r.close()


async def record_timed(event: Event) -> None:
    """Like ``record``, each mark followed by the wall-clock time (seconds) it was written:
    "<id> <consumer> <delivery> <time>". One more steer: {"hang-from": n}: from delivery n
    on, hang (until <stream>:release exists) instead of sleeping, so a first run can finish
    while a later run of the same entry, by a peer that claimed it, keeps it pending. A run
    cancelled by edged (lost lease, end of the shutdown grace) is marked in <stream>:cancelled."""
    import time

    r = _client()
    base = f"{event.id} {_me()} {event.delivery}"
    await r.rpush(f"{event.stream}:started", f"{base} {time.time():.6f}")
    body = event.payload if isinstance(event.payload, dict) else {}
    hang_from = body.get("hang-from")
    late = hang_from is not None and event.delivery >= int(hang_from)
    try:
        if body.get("sleep") and not late:
            await anyio.sleep(float(body["sleep"]))
        if body.get("hang") or late:
            while not await r.exists(f"{event.stream}:release"):  # noqa: ASYNC110 - polls Redis
                await anyio.sleep(0.05)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await r.rpush(f"{event.stream}:cancelled", f"{base} {time.time():.6f}")
        raise
    if body.get("fail"):
        await r.rpush(f"{event.stream}:failed", f"{base} {time.time():.6f}")
        raise RuntimeError("told to fail")
    if body.get("retry"):
        await r.rpush(f"{event.stream}:failed", f"{base} {time.time():.6f}")
        raise Retry("told to retry")
    await r.rpush(f"{event.stream}:handled", f"{base} {time.time():.6f}")
