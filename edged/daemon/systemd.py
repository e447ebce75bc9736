"""systemd's notify protocol without a dependency: one datagram to $NOTIFY_SOCKET per message.

READY=1 once every stream is being read (the daemon sends it), STOPPING=1 when the drain starts,
STATUS= with counts every few seconds, and WATCHDOG=1 every half of $WATCHDOG_USEC, but only
while the daemon is alive (see daemon/status.py): a wedged daemon stops pinging and systemd
kills it. Everything is a no-op when $NOTIFY_SOCKET is unset. Imports nothing of edged.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import anyio

STATUS_EVERY = 5.0


def notify(*lines: str) -> bool:
    """Send ``lines`` as one message; False when there is no socket or it cannot take it now."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        return False
    try:  # the socket too: out of file descriptors (EMFILE) must not end the daemon
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # never stall the event loop on a full socket queue
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


async def run_notifier(look: Callable[[], tuple[bool, str]]) -> None:
    """STATUS= every few seconds and WATCHDOG=1 while alive, until cancelled.

    ``look`` returns (alive, status line) now; this module knows nothing else of the daemon.
    """
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    ping = watchdog_interval()
    tick = min(STATUS_EVERY, ping) if ping else STATUS_EVERY
    next_status = 0.0
    while True:
        alive, line = look()
        lines = ["WATCHDOG=1"] if ping and alive else []
        now = anyio.current_time()
        if now >= next_status:
            lines.append("STATUS=" + line)
            next_status = now + STATUS_EVERY
        if lines:
            notify(*lines)
        await anyio.sleep(tick)
