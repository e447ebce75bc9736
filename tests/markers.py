"""Marks shared by test modules (kept apart from tests.support, which bench imports too)."""

from __future__ import annotations

import pytest

# `edged start --embedded` without a config serves the demo's /metrics on its documented
# 127.0.0.1:9478: the tests that start it share one pytest-xdist worker (--dist loadgroup in
# pyproject.toml), so two of them never race for the port.
DEMO_PORT = pytest.mark.xdist_group("embedded-demo-port-9478")
