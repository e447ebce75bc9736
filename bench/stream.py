"""Stream set-up and the group-progress probe the harness polls while a consumer drains."""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

PRELOAD_CHUNK = 1000


def preload(client: redis.Redis, stream: str, entries: int) -> bytes:
    """Append ``entries`` small JSON payloads, pipelined; returns the id of the last one."""
    last_id = b""
    for start in range(0, entries, PRELOAD_CHUNK):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + PRELOAD_CHUNK, entries)):
            pipe.xadd(stream, {"payload": json.dumps({"n": n, "kind": "bench"})})
        last_id = pipe.execute()[-1]
    return last_id


def fresh_stream(client: redis.Redis, stream: str, group: str, entries: int) -> bytes:
    """Recreate ``stream`` with a group at id 0, so the consumer drains the whole backlog."""
    client.delete(stream)
    # The group exists before the consumer starts: it must not create it at ``$`` and skip all.
    client.xgroup_create(stream, group, id="0", mkstream=True)
    return preload(client, stream, entries) if entries else b""


@dataclass(frozen=True)
class GroupState:
    delivered: int
    """``entries-read``: how many entries the group has been handed (Redis/Valkey 7+)."""
    pending: int
    consumers: int
    last_delivered_id: bytes

    def drained(self, entries: int, last_id: bytes) -> bool:
        # entries-read can be unknown (None) on some servers: the last delivered id then decides.
        everything_read = self.delivered >= entries or self.last_delivered_id == last_id
        return everything_read and self.pending == 0


def group_state(client: redis.Redis, stream: str, group: str) -> GroupState:
    for info in client.xinfo_groups(stream):
        if info["name"] in (group, group.encode()):
            return GroupState(
                delivered=info.get("entries-read") or 0,
                pending=info["pending"],
                consumers=info["consumers"],
                last_delivered_id=info["last-delivered-id"],
            )
    raise LookupError(f"group {group!r} of {stream!r} is gone")
