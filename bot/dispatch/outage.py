"""While the outbox cannot be written, all sending pauses: a message sent then could not be recorded.

One outage is one pause, however many sends it caught. During the pause a cheap write probe runs on the
`PROBE_LADDER`'s steps, so sending resumes within about a step of the database being back, instead of
waiting out a pause that grew while the fault lasted. Sends the platform accepted but the outbox could not
record are kept here, and recorded before the chat's rows are read again, so an alert never goes out twice
while the bot runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from perpwatch.backoff import Ladder
from perpwatch.clock import Clock

log = logging.getLogger(__name__)

PROBE_LADDER = Ladder((1.0,))
"""Seconds between write probes while storage is away: sending resumes within about a second of the
database taking writes again. A probe that meets the lock stops the loop for the busy timeout (100 ms)."""

FORGET_AFTER_S = 60.0
"""A fault this long after the last outage ended starts a new outage."""


@dataclass(frozen=True)
class Unrecorded:
    """A message the platform accepted whose delivery rows the outbox could not yet mark sent."""

    ids: Sequence[int]
    message_ref: str | None
    sent_at: datetime


class StorageOutage:
    def __init__(self, clock: Clock, *, ladder: Ladder = PROBE_LADDER) -> None:
        self.clock = clock
        self.ladder = ladder
        self.probes = 0
        self._paused_until: float | None = None
        self._ended_at = float("-inf")
        self.unrecorded: dict[int, Unrecorded] = {}

    def paused(self) -> bool:
        return self._paused_until is not None

    def probe_in_s(self) -> float | None:
        """Seconds until the next probe is due, or None when storage is fine."""
        if self._paused_until is None:
            return None
        return max(self._paused_until - self.clock.monotonic(), 0.0)

    def fault(self, error: object, chat_id: int | None = None) -> None:
        """A read or write failed because storage is away: pause (once per outage) and plan a probe."""
        if self._paused_until is not None:
            return
        now = self.clock.monotonic()
        if now - self._ended_at > FORGET_AFTER_S:
            self.probes = 0
        self._paused_until = now + self.ladder.at(self.probes)
        log.warning(
            "storage unavailable, sending paused chat=%s unrecorded=%d error=%s", chat_id, len(self.unrecorded), error
        )

    def probe_failed(self, error: object) -> None:
        self.probes += 1
        self._paused_until = self.clock.monotonic() + self.ladder.at(self.probes)
        if self.probes in (10, 60) or self.probes % 300 == 0:
            log.error("storage still unavailable, sending paused probes=%d error=%s", self.probes, error)

    def ended(self) -> None:
        if self._paused_until is None:
            return
        self._paused_until = None
        self._ended_at = self.clock.monotonic()
        log.warning("storage available again, sending resumes probes=%d", self.probes)
