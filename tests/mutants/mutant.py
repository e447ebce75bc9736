"""One promise-breaking change to the code, and the tests that must catch it."""

from __future__ import annotations

import msgspec


class Mutant(msgspec.Struct, frozen=True, kw_only=True):
    # Short, unique, kebab-case: what the broken build does ("reclaim-ignores-free-slots").
    name: str
    # The promise it breaks, in the README's words.
    promise: str
    # File to change, relative to the repository root (edged/... or edged/lua/...).
    path: str
    # Exact text that occurs exactly once in the file, and what it becomes.
    old: str
    new: str
    # pytest node ids that guard the promise; at least one must fail on the broken build.
    tests: tuple[str, ...]
    # In the fast subset that .ci/run plays on every change.
    fast: bool = False
