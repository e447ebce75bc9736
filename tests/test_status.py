"""The one status (edged/daemon/status.py) that /readyz, /healthz, /metrics, systemd and the
heartbeat read: its rules, on a daemon built but not run (no I/O)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import write_config


def _daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    from edged.config import load_config
    from edged.daemon.run import Daemon

    path = write_config(tmp_path / "c.toml",
                        [{"stream": "s", "handler": "edged.handlers:log", "concurrency": 2,
                          "claim-idle": "3s", "claim-interval": "500ms"}],
                        daemon={"read-block": "1s"})
    return Daemon(load_config(path))


@pytest.mark.anyio
async def test_liveness_and_readiness_rules(tmp_path: Path) -> None:
    """A connected reader with free slots and no read for longer than 3 x read-block + 10s is
    stuck; the same reader is not stuck while Redis is away, while every slot is busy, or while
    the daemon drains. Not ready until the first read; never ready while draining."""
    daemon = _daemon(tmp_path)
    state = daemon.streams[0].state
    try:
        assert daemon.status().not_ready == ["stream s (edged): Redis unavailable"]
        state.connected = True
        assert daemon.status().not_ready == ["stream s (edged): not reading yet"]
        state.ready.set()
        assert daemon.status().ready
        assert daemon.status().alive
        state.last_progress = time.monotonic() - 14
        assert "no read completed" in daemon.status().not_alive[0]
        state.stats.in_flight = 2
        assert daemon.status().alive
        state.stats.in_flight = 0
        state.connected = False
        assert daemon.status().alive
        state.connected = True
        assert not daemon.status().alive
        daemon.stop_requested.set()  # draining: never ready, never stuck
        assert daemon.status().not_ready == ["draining"]
        assert daemon.status().alive
    finally:
        await daemon.client.aclose()


@pytest.mark.anyio
async def test_status_line_heartbeat_and_summary_read_the_same_counts(tmp_path: Path) -> None:
    """STATUS=, the heartbeat record and the shutdown summary are views of one snapshot."""
    daemon = _daemon(tmp_path)
    stats = daemon.streams[0].state.stats
    try:
        stats.acked, stats.dead_lettered, stats.failed, stats.retried = 7, 2, 3, 1
        stats.released, stats.cancelled, stats.in_flight = 4, 1, 1
        status = daemon.status()
        assert status.line().endswith("9 processed, 4 failed, 1 in flight")
        fields = status.heartbeat_fields()
        assert (fields["processed"], fields["failed"], fields["dead-lettered"],
                fields["in-flight"], fields["ready"]) == ("9", "4", "2", "1", "0")
        summary = status.summary()
        for part in ("9 handled", "7 acked", "2 dead-lettered", "3 failed", "1 retried",
                     "4 handed back", "1 cancelled", "1 still running"):
            assert part in summary, (part, summary)
    finally:
        await daemon.client.aclose()


@pytest.mark.anyio
async def test_heartbeat_carries_the_daemons_own_claim_settings(tmp_path: Path) -> None:
    """Operators' verdicts read claim-idle and claim-interval from the daemon's record."""
    import msgspec

    from edged.keys import HB_CLAIM

    daemon = _daemon(tmp_path)
    try:
        record = daemon.heartbeat.record()
        assert msgspec.json.decode(record[HB_CLAIM]) == {"s/edged": [3000, 500]}
    finally:
        await daemon.client.aclose()


@pytest.mark.anyio
async def test_a_degraded_stream_shows_everywhere_and_clears(tmp_path: Path) -> None:
    """A WRONGTYPE on a reading stream: not ready (the command, key and error named), still
    alive even with no read for long (a restart cannot fix it), STATUS= says DEGRADED, the
    heartbeat record carries it for `edged status`. The same operation working again clears it,
    and the error counter keeps its count."""
    import json

    from redis.exceptions import ResponseError

    from edged.keys import HB_DEGRADED, HB_READY

    daemon = _daemon(tmp_path)
    stream = daemon.streams[0]
    state = stream.state
    try:
        state.connected = True
        state.ready.set()
        wrongtype = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
        assert stream.health.failed("read", "XREADGROUP", "s", wrongtype) > 0
        stream.health.failed("read", "XREADGROUP", "s", wrongtype)
        status = daemon.status()
        assert status.not_ready == ["stream s (edged): degraded: XREADGROUP s: WRONGTYPE "
                                    "Operation against a key holding the wrong kind of value"]
        state.last_progress = time.monotonic() - 60
        assert daemon.status().alive
        assert "DEGRADED stream s (edged)" in status.line()
        fields = status.heartbeat_fields()
        assert fields[HB_READY] == "0"
        assert "WRONGTYPE" in json.loads(fields[HB_DEGRADED])["s/edged"]
        stream.health.ok("reclaim")  # another operation working does not clear it
        assert not daemon.status().ready
        stream.health.ok("read")
        status = daemon.status()
        assert status.ready and not status.degraded
        assert json.loads(status.heartbeat_fields()[HB_DEGRADED]) == {}
        assert status.streams[0].errors == 2
        assert status.streams[0].last_error is not None
    finally:
        await daemon.client.aclose()


def test_a_problem_that_may_never_be_retried_here_is_forgotten_unless_it_recurs() -> None:
    """A dead-letter failure is kept only while it recurs (a peer may settle the entry, and
    then nothing here would ever prove the dead-letter stream works again); a read failure is
    kept until a read works."""
    from redis.exceptions import ResponseError

    from edged.consume.health import StreamHealth
    from tests.support import wait_for

    health = StreamHealth("s", "g")
    health.failed("dead-letter", "XADD", "s:dead", ResponseError("WRONGTYPE x"), expires_after=0.2)
    health.failed("read", "XREADGROUP", "s", ResponseError("WRONGTYPE y"))
    assert health.degraded and "s:dead" in health.describe()
    wait_for(lambda: "s:dead" not in health.describe(), 5, what="the dead-letter problem expired")
    assert health.degraded and health.describe() == "XREADGROUP s: WRONGTYPE y"
    health.ok("read")
    assert not health.degraded and health.since is None
