"""The one event model that flows from a watcher, through the pipeline, to every platform.

Watchers translate each venue's wire words into meaning here, so nothing downstream ever needs to know
that Binance's `o.S=SELL` and Bybit's `S=Buy` both mean "a long was liquidated".
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator


class Topic(StrEnum):
    """What a chat subscribes to. Later sources add bodies, not topics, where a topic already fits."""

    LIQUIDATION = "liquidation"
    CASCADE = "cascade"
    WHALE = "whale"
    BUYBACK = "buyback"
    UNLOCK = "unlock"
    TGE = "tge"


class Venue(StrEnum):
    BINANCE = "binance"
    ASTER = "aster"
    BYBIT = "bybit"
    OKX = "okx"
    LIGHTER = "lighter"
    PACIFICA = "pacifica"
    HYPERLIQUID = "hyperliquid"
    EDGEX = "edgex"


class PositionSide(StrEnum):
    """The side of the *position*, never a venue's order side."""

    LONG = "long"
    SHORT = "short"


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LiquidationBody(_Body):
    """A forced close of one position.

    `side` is the position that was liquidated. `notional_usd` is filled size times average fill price,
    computed from the wire's decimal strings; venues that report quote in a stablecoin count it as USD.
    """

    kind: Literal["liquidation"] = "liquidation"
    side: PositionSide
    size: Decimal = Field(gt=0, description="Filled size in base units.")
    price: Decimal = Field(gt=0, description="Average fill price in quote units.")
    notional_usd: Decimal = Field(gt=0)
    account: str | None = None
    note: str | None = Field(
        default=None,
        description="A caveat the venue imposes, shown with the alert (e.g. a sampled feed).",
    )


# A discriminated union grows here as later sources add bodies (cascade, whale, buyback, unlock, tge).
EventBody = Annotated[LiquidationBody, Field(discriminator="kind")]


class Event(BaseModel):
    """One real-world occurrence, as accepted by the pipeline.

    `key` is stable and unique per occurrence (the venue's own id where it has one), so a frame replayed
    after a reconnect, or an event re-sent after a crash, is recognised and alerts nobody twice.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1, max_length=300)
    topic: Topic
    source: str = Field(min_length=1, description="The watcher that produced it, e.g. 'forceorder'.")
    venue: Venue | None = None
    symbol: str | None = None
    usd: Decimal | None = Field(default=None, ge=0)
    occurred_at: AwareDatetime
    body: EventBody
    link: str | None = Field(
        default=None, description="Where a trader looks next: the market's page, an explorer, a schedule."
    )

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


def utc_from_ms(ms: int) -> datetime:
    """Venues stamp events in Unix milliseconds; we keep aware UTC from the wire on."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
