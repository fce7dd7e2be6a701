"""Rows as the rest of the bot sees them: small frozen dataclasses, no SQL leaks out of `storage/`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

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


@dataclass(frozen=True)
class Threshold:
    topic: str
    min_usd: Decimal


@dataclass(frozen=True)
class WatchEntry:
    address: str
    label: str | None


@dataclass(frozen=True)
class PendingDelivery:
    id: int
    chat_id: int
    attempts: int
    last_error: str | None
    event: Event
    quiet_held: bool = False


@dataclass(frozen=True)
class AcceptResult:
    key: str
    new: bool
    deliveries: int
    chat_ids: tuple[int, ...] = ()
    """The chats that got a delivery: the dispatcher starts on them at once, without asking the database."""


@dataclass(frozen=True)
class Backlog:
    pending: int
    parked: int
    oldest_pending_at: datetime | None
