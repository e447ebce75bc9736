"""systemd's notify protocol without a dependency: one datagram to $NOTIFY_SOCKET per message.

READY=1 once every stream is being read (daemon.py sends it), STOPPING=1 when the drain starts,
STATUS= with counts every few seconds, and WATCHDOG=1 every half of $WATCHDOG_USEC, but only
while the readers are not stuck (see health.liveness_problems): a wedged daemon stops pinging
and systemd kills it. Everything is a no-op when $NOTIFY_SOCKET is unset.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from edged.health import liveness_problems

if TYPE_CHECKING:
    from edged.daemon import Daemon

STATUS_EVERY = 5.0


def notify(*lines: str) -> bool:
    """Send ``lines`` as one message; False when there is no socket or it cannot take it now."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.setblocking(False)  # never stall the event loop on a full socket queue
        try:
            sock.sendto("\n".join(lines).encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between two WATCHDOG=1 pings (half of $WATCHDOG_USEC), None when not asked."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. our parent)
    usec = os.environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None


def status_line(daemon: Daemon, stopping: bool) -> str:
    streams = daemon.streams
    stats = [s.stats for s in streams]
    reading = sum(1 for s in streams if s.ready.is_set() and s.connected)
    if stopping:
        state = "draining"
    elif reading == len(streams):
        state = f"reading {len(streams)} stream{'s' if len(streams) != 1 else ''}"
    elif not any(s.connected for s in streams):
        state = f"waiting for Redis; reading {reading} of {len(streams)} streams"
    else:
        state = f"reading {reading} of {len(streams)} streams"
    return (f"{state}; {sum(s.processed for s in stats)} processed, "
            f"{sum(s.failed + s.retried for s in stats)} failed, "
            f"{sum(s.in_flight for s in stats)} in flight")


async def run_notifier(daemon: Daemon, stopping: Callable[[], bool]) -> None:
    """STATUS= every few seconds and WATCHDOG=1 while alive, until cancelled."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    ping = watchdog_interval()
    tick = min(STATUS_EVERY, ping) if ping else STATUS_EVERY
    next_status = 0.0
    while True:
        lines = []
        if ping and not liveness_problems(daemon, stopping()):
            lines.append("WATCHDOG=1")
        now = anyio.current_time()
        if now >= next_status:
            lines.append("STATUS=" + status_line(daemon, stopping()))
            next_status = now + STATUS_EVERY
        if lines:
            notify(*lines)
        await anyio.sleep(tick)
