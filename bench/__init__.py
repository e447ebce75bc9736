"""Benchmarks of edged: throughput, latency, CLI start-up and footprint next to a raw redis-py loop.

Run it with ``python -m bench`` (or ``python bench/run.py``) from the repository root.
"""
