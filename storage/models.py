"""Rows as the rest of the bot sees them: small frozen dataclasses, no SQL leaks out of `storage/`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from perpwatch.events import Event


def to_cents(amount: Decimal) -> int:
    """Integer cents for SQL comparison; exact Decimal text is kept beside it for display."""
    return int((amount * 100).to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True)
class Chat:
    id: int
    platform: str
    platform_chat_id: str
    kind: str
    title: str | None
    status: str
    gone_reason: str | None
    quiet_start: str | None
    quiet_end: str | None
    quiet_tz: str | None
    held_until: datetime | None = None
    log_cursor: int = 0
    """Every event up to this id is in the chat's deliveries, or matched none of its subscriptions."""
    held_quiet: bool = False
    """The hold is quiet hours: alerts of events accepted before it ends go out in the digest."""

    @property
    def is_group(self) -> bool:
        return self.kind == "group"


@dataclass(frozen=True)
class Subscription:
    id: int
    chat_id: int
    topic: str
    venue: str | None
    symbol: str | None
    min_usd: Decimal | None
    scope: str = "all"
    """'all', or 'watchlist': only events whose subject is on the chat's watch list."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """A family's validated parameters (thresholds, lead times, an hour of day)."""


@dataclass(frozen=True)
class Interest:
    """One subscription as the dispatcher's index of who hears what keeps it: enough to tell, without a
    query, which chats an accepted event may wake. The outbox's own matching stays the truth."""

    chat_id: int
    platform: str
    topic: str
    venue: str
    symbol: str
    scope: str
    min_cents: int
    addresses: tuple[str, ...] = ()
    """For scope 'watchlist': the chat's watched addresses."""


@dataclass(frozen=True)
class Threshold:
    topic: str
    min_usd: Decimal


@dataclass(frozen=True)
class WatchEntry:
    address: str
    label: str | None


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """One outbox row due now. `event` is None when its stored body no longer decodes (`decode_error` says
    why): the dispatcher parks such a row instead of letting it jam the chat."""

    id: int
    chat_id: int
    attempts: int
    event: Event | None
    due_at: datetime
    expires_at: datetime | None = None
    quiet_held: bool = False
    thread: str | None = None
    revision: int = 0
    edit_ref: str | None = None
    """Where the thread's last sent message lives (a dumped MessageRef): this row goes out as its edit."""
    decode_error: str | None = None


@dataclass(frozen=True)
class AcceptResult:
    key: str
    new: bool
    event_id: int | None = None
    """Where the event sits in the log (None for a replay): the dispatcher wakes the chats that hear of it."""


@dataclass(frozen=True)
class Backlog:
    pending: int
    """Due now or overdue: what waits for a send."""
    scheduled: int
    """Due later (reminders before their event): not backlog."""
    parked: int
    oldest_pending_at: datetime | None
    behind: int = 0
    """Active chats that have yet to read the newest events of the log (their alerts are not rows yet)."""
