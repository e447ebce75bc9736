"""Drain-throughput benchmark: edged vs a raw redis-py loop vs FastStream.

Run it with ``python -m bench`` (or ``python bench/run.py``) from the repository root.
"""
