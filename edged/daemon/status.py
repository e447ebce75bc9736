"""One status of the daemon, computed once per look and read by every observer.

``/readyz``, ``/healthz``, ``/metrics``, systemd's ``STATUS=`` and watchdog, the heartbeat
record and the shutdown summary all read a ``DaemonStatus`` made by ``snapshot``; none of them
reaches into the consumers. What "ready" and "alive" mean is decided here and nowhere else:

- ready: every stream has completed its first read, is connected, is not degraded (an error
  waiting alone does not fix: consume/health.py), and the daemon is not draining;
- alive: no reader is stuck. A reader is stuck when it is connected and has a free worker slot
  but has not completed a read for ``3 x read-block + 10s``. A reader waiting for Redis
  (backing off) or for busy workers is not stuck, so Redis being away never gets the daemon
  restarted (it reconnects by itself); nor is any reader while the daemon drains. A degraded
  stream is alive: a restart cannot fix WRONGTYPE or NOPERM, and would stop the other streams.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from edged.consume.consumer import StreamConsumer
from edged.consume.stats import StreamStats
from edged.keys import (
    HB_DEAD_LETTERED,
    HB_DEGRADED,
    HB_FAILED,
    HB_IN_FLIGHT,
    HB_OUTBOX,
    HB_PAUSED,
    HB_PROCESSED,
    HB_READY,
)


def stall_limit(read_block: float) -> float:
    """Seconds without a completed read after which a connected, idle-slotted reader is stuck."""
    return 3 * read_block + 10


@dataclass(frozen=True)
class StreamStatus:
    stream: str
    group: str
    concurrency: int
    claim_idle: float
    claim_interval: float
    connected: bool
    reading: bool
    """First read done and connected."""
    quiet_seconds: float
    """Since the last completed read."""
    stuck: bool
    stats: StreamStats
    """The live counters (plain ints bumped on the hot path)."""
    degraded: str
    """What is failing now that waiting for Redis does not fix; "" when healthy."""
    degraded_seconds: float
    last_error: str | None
    """The last such error, kept after the stream resumed."""
    errors: int
    restarts: int
    """Times the stream's consumer failed as a whole and was started again."""
    logical: str
    """The config's stream this one is a shard of (itself when not sharded)."""
    shard: int
    """Its index among the logical stream's shards (0 when not sharded)."""
    paused: bool = False
    """`edged pause`: not read until resumed."""

    @property
    def name(self) -> str:
        return f"stream {self.stream} ({self.group})"


@dataclass(frozen=True)
class DaemonStatus:
    consumer: str
    stopping: bool
    failovers: int
    streams: list[StreamStatus]
    not_ready: list[str] = field(default_factory=list)
    """Why the daemon is not ready; empty when it is."""
    not_alive: list[str] = field(default_factory=list)
    """Why the daemon looks wedged; empty when it is alive."""
    degraded: list[str] = field(default_factory=list)
    """One line per degraded stream: what fails, for how long."""
    outbox: int | None = None
    """Entries waiting in the outbox; None without one."""

    @property
    def ready(self) -> bool:
        return not self.not_ready

    @property
    def alive(self) -> bool:
        return not self.not_alive

    @property
    def connected(self) -> bool:
        return all(s.connected for s in self.streams)

    def total(self, counter: str) -> int:
        """One counter of StreamStats (or ``processed``) summed over the streams."""
        return sum(getattr(s.stats, counter) for s in self.streams)

    def line(self) -> str:
        """systemd's STATUS=: what the daemon does, and its counts."""
        n = len(self.streams)
        reading = sum(1 for s in self.streams if s.reading)
        if self.stopping:
            state = "draining"
        elif reading == n:
            state = f"reading {n} stream{'s' if n != 1 else ''}"
        elif not any(s.connected for s in self.streams):
            state = f"waiting for Redis; reading {reading} of {n} streams"
        else:
            state = f"reading {reading} of {n} streams"
        if self.degraded:
            state += "; DEGRADED " + "; ".join(self.degraded)
        outbox = "" if self.outbox is None else f", {self.outbox} in the outbox"
        return (f"{state}; {self.total('processed')} processed, "
                f"{self.total('failed') + self.total('retried')} failed, "
                f"{self.total('in_flight')} in flight{outbox}")

    def heartbeat_fields(self) -> dict[str, str]:
        """Live counts for the heartbeat record (read by `edged status`)."""
        outbox = {} if self.outbox is None else {HB_OUTBOX: str(self.outbox)}
        paused = [f"{s.stream}/{s.group}" for s in self.streams if s.paused]
        return outbox | {HB_PAUSED: msgspec.json.encode(paused).decode()} | {
            HB_READY: "1" if self.ready else "0",
            HB_IN_FLIGHT: str(self.total("in_flight")),
            HB_PROCESSED: str(self.total("processed")),
            HB_FAILED: str(self.total("failed") + self.total("retried")),
            HB_DEAD_LETTERED: str(self.total("dead_lettered")),
            HB_DEGRADED: msgspec.json.encode(
                {f"{s.stream}/{s.group}": s.degraded for s in self.streams if s.degraded}
            ).decode(),
        }

    def summary(self) -> str:
        """The one line logged at the end of a run."""
        return (f"{self.total('processed')} handled ({self.total('acked')} acked, "
                f"{self.total('dead_lettered')} dead-lettered, {self.total('stale_acks')} taken "
                f"by peers), {self.total('failed')} failed, {self.total('retried')} retried, "
                f"{self.total('released')} handed back, {self.total('cancelled')} cancelled and "
                f"left pending, {self.total('in_flight')} still running")


def snapshot(consumer: str, streams: Sequence[StreamConsumer], *, stopping: bool,
             failovers: int, read_block: float, outbox: int | None = None,
             access: str | None = None) -> DaemonStatus:
    """The status of a daemon consuming ``streams`` now."""
    now = time.monotonic()
    limit = stall_limit(read_block)
    rows = [_stream_status(s, now, limit, stopping) for s in streams]
    degraded = [f"{row.name} for {row.degraded_seconds:.0f}s: {row.degraded}"
                for row in rows if row.degraded]
    not_ready = ["draining"] if stopping else []
    if access:  # Redis refused our user: no stream can be read, and waiting alone won't fix it
        not_ready.append(access)
        degraded.insert(0, access)
    for row in rows:
        if row.degraded:
            not_ready.append(f"{row.name}: degraded: {row.degraded}")
        elif not row.connected:
            not_ready.append(f"{row.name}: Redis unavailable")
        elif not row.reading:
            not_ready.append(f"{row.name}: not reading yet")
    not_alive = [f"{row.name}: no read completed for {row.quiet_seconds:.0f}s"
                 for row in rows if row.stuck]
    return DaemonStatus(consumer=consumer, stopping=stopping, failovers=failovers,
                        streams=rows, not_ready=not_ready, not_alive=not_alive,
                        degraded=degraded, outbox=outbox)


def _stream_status(s: StreamConsumer, now: float, limit: float, stopping: bool) -> StreamStatus:
    state = s.state
    quiet = now - state.last_progress
    # Readers stop reading on purpose while the drain runs; every slot busy: the reader waits
    # for a handler to finish, by design; Redis away: it backs off (socket timeouts bound it).
    health = s.health
    reading_fails = "read" in health.problems or "group" in health.problems
    stuck = (not stopping and quiet > limit and state.connected and not reading_fails
             and state.stats.in_flight < s.cfg.concurrency and not state.paused)
    return StreamStatus(
        stream=state.stream, group=state.group, concurrency=s.cfg.concurrency,
        claim_idle=s.cfg.claim_idle.seconds, claim_interval=s.cfg.claim_interval.seconds,
        connected=state.connected, reading=state.ready.is_set() and state.connected,
        quiet_seconds=quiet, stuck=stuck, stats=state.stats,
        degraded=health.describe(), last_error=health.last_error, errors=health.errors,
        degraded_seconds=now - health.since if health.since is not None else 0.0,
        restarts=s.restarts, logical=s.logical, shard=s.shard, paused=state.paused,
    )
