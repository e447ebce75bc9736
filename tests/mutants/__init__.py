"""The mutation check: promise-breaking changes to edged, each of which the suite must catch.

``python -m tests.mutants`` plays the whole catalog (slow); ``--fast`` the subset .ci/run plays;
``--only NAME`` one mutant; ``--list`` prints the catalog. See docs/mutation-check.md.
"""
