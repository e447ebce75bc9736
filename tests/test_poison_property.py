"""Generated entries of any shape, consumed by one real daemon: each ends handled or
dead-lettered with a reason, nothing stays pending, and the daemon never exits.

Hypothesis writes the entries (arbitrary bytes for field names and values, duplicates, up to
20 000 fields, payloads that are bytes, JSON of any shape, or steer the test handler to reject
or fail) with a raw XADD, as any producer could. The outcome is read back from Redis.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edged.keys import DEAD_REASON
from tests.servers import Server
from tests.support import DaemonProcess, Fleet, wait_for
from tests.test_poison import dead_copies, handled_ids, stream_cfg, xadd_raw

pytestmark = pytest.mark.slow

PAYLOADS = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.sampled_from([b"{}", b"5", b"[1, 2]", b'"text"', b"null", b'{"reject": "generated"}',
                     b'{"fail": true}', b'{"payload": {"nested": [1, {"x": null}]}}']),
)


def _wide(n: int, tag: bytes, shape: str) -> list[bytes]:
    """``n`` fields: distinct text names, names with a non-UTF-8 byte, or names given twice."""
    flat: list[bytes] = []
    for i in range(n):
        if shape == "binary":
            name = b"\xfe" + str(i).encode()
        elif shape == "duplicate":
            name = f"d{i % max(1, n // 2)}".encode()
        else:
            name = f"w{i}".encode()
        flat += [name, tag]
    return flat


FIELDS = st.one_of(
    st.lists(st.tuples(st.binary(max_size=24), st.binary(max_size=64)), max_size=10).map(
        lambda pairs: [part for pair in pairs for part in pair]),
    st.builds(_wide, st.integers(1, 20_000), st.binary(max_size=4),
              st.sampled_from(["text", "binary", "duplicate"])),
)


@st.composite
def entries(draw: st.DrawFn) -> list[bytes]:
    flat = draw(FIELDS)
    payload = draw(PAYLOADS)
    if payload is not None:
        flat = [b"payload", payload, *flat] if draw(st.booleans()) else [*flat, b"payload", payload]
    return flat or [b"payload", b"{}"]  # XADD needs one field at least


def test_generated_entries_end_handled_or_dead_lettered(
    server: Server, r: redis.Redis, stream: str, tmp_path: Path, spawned: list[DaemonProcess]
) -> None:
    """Must hold for every generated batch: each entry is handled (the handler recorded it)
    xor in the dead-letter stream with a non-empty reason; the pending list drains; the daemon
    runs on and never logs a traceback."""
    fleet = Fleet(server.url, tmp_path, spawned)
    daemon = fleet.start("gen", [stream_cfg(stream, **{"max-deliveries": 2,
                                                       "retry-backoff": "20ms"})])
    daemon.wait_ready()
    dead = f"{stream}:dead"

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(batch=st.lists(entries(), min_size=1, max_size=3))
    # The widest shapes always run, whatever the search draws.
    @example(batch=[[b"payload", b'{"reject": "wide"}', *_wide(20_000, b"\x00", "text")],
                    [*_wide(20_000, b"v", "binary"), b"payload", b"{}"],
                    [*_wide(20_000, b"", "duplicate")]])
    @example(batch=[[b"payload", b'{"fail": true}', *_wide(9_000, b"\xff", "text")]])
    def one_batch(batch: list[list[bytes]]) -> None:
        ids = [xadd_raw(r, stream, flat) for flat in batch]

        def settled() -> bool:
            done = handled_ids(r, stream) | set(dead_copies(r, dead) if r.exists(dead) else {})
            return set(ids) <= done

        wait_for(settled, 60, what=lambda: f"{ids} settled:\n{daemon.output()[-3000:]}")
        copies = dead_copies(r, dead) if r.exists(dead) else {}
        for entry_id in set(ids) & set(copies):
            assert copies[entry_id][0][DEAD_REASON], entry_id
        assert not set(ids) & set(copies) & handled_ids(r, stream)
        wait_for(lambda: r.xpending(stream, "edged")["pending"] == 0, 30, what="drained")
        assert daemon.proc.poll() is None, daemon.output()[-3000:]

    one_batch()
    assert "Traceback" not in daemon.output(), daemon.output()[-5000:]
