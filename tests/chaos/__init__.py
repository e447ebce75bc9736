"""The history checker: a seeded random fault run against real servers and real `edged start`
daemons, then a check of what happened to every acknowledged entry.

Run it with ``python -m tests.chaos --seed 7 --duration 120 [--sentinel | --cluster]``; see
docs/history-checker.md. ``harness.py`` runs the history, ``checker.py`` judges it,
``handler.py`` is the daemons' handler, ``test_checker.py`` proves the checker sees a loss.
"""
