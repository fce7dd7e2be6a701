"""Retry timing and log rates, written once: every reconnect, retry and outage in the bot uses these.

Full jitter for reconnects (many clients must not collide when a venue restarts), a fixed ladder for
outages (a database or an API that is away: the waits grow, then repeat their last step), and one rule
for how often a repeating failure is logged.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def full_jitter(attempt: int, initial_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """A uniform draw up to the capped exponential: spreads clients out instead of making them collide
    again on each doubling."""
    ceiling = min(max_s, initial_s * (1 << min(max(attempt, 0), 32)))
    return rand() * ceiling


def half_jitter(delay_s: float, rand: Callable[[], float] = random.random) -> float:
    """Between half the delay and all of it: a retry that must wait at least a while, but not in step."""
    return delay_s / 2 + rand() * delay_s / 2


@dataclass(frozen=True)
class Ladder:
    """Waits that grow step by step while a fault lasts, then repeat the last step."""

    steps: Sequence[float]

    def __post_init__(self) -> None:
        if not self.steps or any(s < 0 for s in self.steps):
            raise ValueError("a ladder needs at least one non-negative step")

    def at(self, attempt: int) -> float:
        return self.steps[min(max(attempt, 0), len(self.steps) - 1)]


def should_log(count: int) -> bool:
    """A failure that repeats (a venue changed its format, a sink keeps failing) repeats on every frame;
    the first few and every 100th are enough."""
    return count <= 3 or count % 100 == 0
