"""Marks shared by test modules (kept apart from tests.support, which bench imports too)."""

from __future__ import annotations

import pytest

# `edged start --embedded` without a config serves the demo's /metrics on its documented
# 127.0.0.1:9478: the tests that start it hold one lock file (the demo_port_lock fixture in
# conftest.py) for their whole run, so two pytest-xdist workers never race for the port.
DEMO_PORT = pytest.mark.usefixtures("demo_port_lock")
