"""Shutdown is one budget: shutdown-grace for the handlers, then a bounded clean-up phase.
systemd must give the daemon all of it before it sends SIGKILL."""

from __future__ import annotations

import re
from pathlib import Path

from edged.config import DaemonConfig
from edged.shutdown import CLEANUP_BUDGET, END_HEARTBEAT, HAND_BACK_AND_FLUSH

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edged.service"


def test_unit_stop_timeout_covers_grace_and_cleanup() -> None:
    """TimeoutStopSec of the shipped unit ≥ the default shutdown-grace + the clean-up budget,
    and the unit's comment names the clean-up budget it was sized for."""
    text = UNIT.read_text()
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.M)
    assert stop, "TimeoutStopSec=<n>s not found in systemd/edged.service"
    grace = DaemonConfig().shutdown_grace.seconds
    assert int(stop.group(1)) >= grace + CLEANUP_BUDGET, (
        f"TimeoutStopSec={stop.group(1)}s is below shutdown-grace {grace:g}s + clean-up "
        f"{CLEANUP_BUDGET:g}s: systemd would SIGKILL a daemon still handing back work"
    )
    assert f"at most {CLEANUP_BUDGET:g}s" in text


def test_cleanup_budget_is_the_sum_of_its_phases() -> None:
    assert CLEANUP_BUDGET == HAND_BACK_AND_FLUSH + END_HEARTBEAT
