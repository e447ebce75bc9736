"""Stream set-up and the group-progress probe the harness polls while a consumer drains."""

from __future__ import annotations

from dataclasses import dataclass

import redis

PRELOAD_CHUNK = 10_000

# XADD in a server-side loop: the 1M-entry footprint backlog takes seconds, not tens of them, and
# the entries are those a client would add (payload exactly json.dumps({"n": n, "kind": "bench"})).
# One script call per chunk blocks the server for a few ms, while nothing else runs.
_PRELOAD_LUA = """
local last
for n = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do
  last = redis.call('XADD', KEYS[1], '*', 'payload', '{"n": ' .. n .. ', "kind": "bench"}')
end
return last
"""


def preload(client: redis.Redis, stream: str, entries: int) -> bytes:
    """Append ``entries`` small JSON payloads; returns the id of the last one."""
    add = client.register_script(_PRELOAD_LUA)
    last_id = b""
    for start in range(0, entries, PRELOAD_CHUNK):
        last_id = add(keys=[stream], args=[start, min(start + PRELOAD_CHUNK, entries)])
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
