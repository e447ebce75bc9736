"""Capped exponential backoff with full jitter: how every loop of edged waits after a failure."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``base`` up to ``cap``, jittered; ``reset`` after a success."""

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0
