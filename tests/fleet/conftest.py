"""The fleet tests boot real Debian 12 hosts (root, debootstrap, systemd-nspawn): they run only
with EDGED_FLEET_TESTS=1 (CI runs them as a separate step), and are skipped otherwise so that
the normal suite stays fast and needs no root."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ENABLED = os.environ.get("EDGED_FLEET_TESTS") == "1"
HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fleet: boots real systemd hosts (root); run with EDGED_FLEET_TESTS=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in Path(str(item.path)).resolve().parents:
            continue
        item.add_marker(pytest.mark.fleet)
        if not ENABLED:
            item.add_marker(pytest.mark.skip(reason="fleet test: set EDGED_FLEET_TESTS=1 (root)"))


@pytest.fixture(scope="session")
def fleet_timings() -> Iterator[dict[str, float]]:
    """Durations the fleet tests record; printed at the end of the session."""
    timings: dict[str, float] = {}
    yield timings
    if timings:
        print("\nfleet timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


@pytest.fixture(scope="module")
def fleet(fleet_timings: dict[str, float]) -> Iterator[object]:
    """Three booted hosts for the module; everything is removed afterwards, also on failure."""
    if os.geteuid() != 0:
        pytest.fail("fleet tests need root (debootstrap, systemd-nspawn, ip netns)")
    from tests.fleet.hosts import Fleet

    started = time.monotonic()
    f = Fleet.start(n=3)
    fleet_timings["tree (cached or built)"] = f.timings["tree"]
    fleet_timings["boot of 3 hosts"] = f.timings["boot"]
    fleet_timings["Fleet.start total"] = time.monotonic() - started
    try:
        yield f
    finally:
        f.close()
