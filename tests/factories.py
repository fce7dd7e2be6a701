"""Events for tests that are about the pipeline, not about a venue's wire format."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from perpwatch.events import Event, LiquidationBody, PositionSide, Topic, Venue


def liquidation(
    *,
    key: str | None = None,
    venue: str = "binance",
    symbol: str = "BTCUSDT",
    usd: str = "138.74",
    side: str = "long",
    at: datetime | None = None,
) -> Event:
    notional = Decimal(usd)
    price = Decimal("9910")
    return Event(
        key=key or f"test:{venue}:{symbol}:{usd}:{side}",
        topic=Topic.LIQUIDATION,
        source="test",
        venue=Venue(venue),
        symbol=symbol,
        usd=notional,
        occurred_at=at or datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        body=LiquidationBody(side=PositionSide(side), size=notional / price, price=price, notional_usd=notional),
    )


def liq(event: Event) -> LiquidationBody:
    """The event's body as a liquidation (the event model's union holds other families too)."""
    assert isinstance(event.body, LiquidationBody), event.body.kind
    return event.body
