"""Whether an event read from a venue could be real, and the reason it is refused when it cannot.

A frame may be well formed and still false or hostile: a symbol carrying escape sequences, a figure that
overflows storage, a trade stamped 1970 or 9999. Such an event is refused before the sink with a counted
reason (`WatcherHealth.rejected`, shown by `/status`), so it never reaches a chat and never holds up the
frames behind it. The time window is read on the stream's clock, so a test's frozen clock decides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from perpwatch.events import MAX_USD, MIN_USD, Event

BAD_SYMBOL = "bad_symbol"
BAD_FIGURE = "bad_figure"
BAD_TIME = "bad_time"
IMPLAUSIBLE_USD = "implausible_usd"
TOO_OLD = "too_old"
FROM_THE_FUTURE = "from_the_future"
UNSTORABLE = "unstorable"
INVALID_EVENT = "invalid_event"

_FIELD_REASONS = {
    "symbol": BAD_SYMBOL,
    "usd": IMPLAUSIBLE_USD,
    "notional_usd": IMPLAUSIBLE_USD,
    "size": BAD_FIGURE,
    "price": BAD_FIGURE,
    "occurred_at": BAD_TIME,
}


class Refused(ValueError):
    """A frame that was read, but whose event cannot be true or must not be shown; counted under `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def reason_of(exc: Exception) -> str | None:
    """Why a frame's event was refused, or None for a frame that simply could not be read."""
    if isinstance(exc, Refused):
        return exc.reason
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        loc = errors[0]["loc"] if errors else ()
        return _FIELD_REASONS.get(str(loc[-1]), INVALID_EVENT) if loc else INVALID_EVENT
    return None


@dataclass(frozen=True, slots=True)
class Plausible:
    """The window an event's time must fall in, around now. The past is wide: frames recorded from a live
    venue and replayed later, or read back after a long outage, are real; whether an old alert is still worth
    sending is its expiry's question, not this one. The future is narrow but forgives a host clock somewhat
    off. 1970, 9999 and ten years ahead fall outside either way."""

    max_age_s: float = 365 * 86400.0
    max_skew_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_age_s <= 0 or self.max_skew_s < 0:
            raise ValueError("max_age_s must be > 0 and max_skew_s >= 0")

    def check(self, event: Event, now: datetime) -> str | None:
        """The reason `event` is refused at `now`, or None when it could be real."""
        if event.occurred_at < now - timedelta(seconds=self.max_age_s):
            return TOO_OLD
        if event.occurred_at > now + timedelta(seconds=self.max_skew_s):
            return FROM_THE_FUTURE
        if event.usd is not None and not MIN_USD <= event.usd <= MAX_USD:
            return IMPLAUSIBLE_USD
        return None


PLAUSIBLE = Plausible()
