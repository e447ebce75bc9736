"""How edged names what it keeps in Redis: dead-letter streams, shards, its own keys.

One rule drives it: every set of keys that one command or one script touches shares a hash
slot, in every mode, so that the same code runs on one server and on a cluster. What differs
by mode is only what existing single-node deployments must keep:

- an unsharded stream's default dead-letter stream is ``<stream>:dead`` on one server (as
  always: a deployment's dead letters do not move on upgrade) and ``{<stream>}:dead`` on a
  cluster, where it must share the stream's slot (a stream with its own hash tag keeps
  ``<stream>:dead``, which already does);
- edged's own keys (heartbeat records and the last-seen hash, touched together by one script)
  keep ``<prefix>...`` on one server and get the prefix as their hash tag on a cluster
  (``{edged}:daemon:<consumer>``);
- sharded streams are new, so they have one naming in both modes: shard ``i`` is
  ``<stream>:<i>:<k>`` and its dead-letter stream ``{<stream>:<i>:<k>}:dead`` (sharding.py).
"""

from __future__ import annotations

from edged.keys import default_dead_letter
from edged.sharding import key_slot, same_slot_key, shard_dead_letter, shard_names

DEAD_SUFFIX = ":dead"


def own_prefix(prefix: str, cluster: bool) -> str:
    """The prefix of edged's own keys: on a cluster, made a hash tag so they share one slot."""
    if not cluster or "{" in prefix or "}" in prefix:
        return prefix  # a prefix with its own braces says where its keys go (checked at load)
    if prefix.endswith(":"):
        return "{" + prefix[:-1] + "}:"
    return "{" + prefix + "}"


def dead_letter_names(stream: str, shards: int, dead_letter: str | None, cluster: bool) -> list[str]:
    """The dead-letter stream of each physical stream of ``stream``, in shard order.

    Raises ValueError saying why when no name can share its stream's slot on a cluster.
    """
    if shards > 1:
        if dead_letter is not None and not cluster:
            return [dead_letter] * shards  # one server: the shards may share one
        if dead_letter is not None:
            raise ValueError("on a cluster each shard has its own dead-letter stream "
                             "({<shard>}:dead, in the shard's slot); remove dead-letter")
        return [shard_dead_letter(name) for name in shard_names(stream, shards)]
    if dead_letter is not None:
        if cluster and key_slot(dead_letter) != key_slot(stream):
            raise ValueError(
                f"{dead_letter!r} is in hash slot {key_slot(dead_letter)} and the stream "
                f"{stream!r} in slot {key_slot(stream)}: on a cluster they must share one "
                f"(e.g. {same_slot_key_or_hint(stream)})")
        return [dead_letter]
    if cluster:
        return [same_slot_key(stream, DEAD_SUFFIX)]
    return [default_dead_letter(stream)]


def same_slot_key_or_hint(stream: str) -> str:
    try:
        return repr(same_slot_key(stream, DEAD_SUFFIX))
    except ValueError:
        return "a name with the stream's hash tag"
