"""A wallet's account as `/whale` shows it, in words any venue's watcher can fill: the command layer reads
this, never a venue's payload."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from perpwatch.events import PositionSide

DISTANCE_STEPS = ("20", "15", "10", "7.5", "5", "3", "2", "1")
"""Every distance to liquidation, in percent, a chat may choose to be warned at (/distance); the whale
watchers warn at each step crossed, and each chat hears only the steps it chose."""
DEFAULT_DISTANCE_STEPS = ("10", "5", "2")


@dataclass(frozen=True, slots=True)
class PositionView:
    coin: str
    side: PositionSide
    size: Decimal
    notional_usd: Decimal
    entry_px: Decimal
    mark_px: Decimal | None
    """None where the venue gives no mark (Pacifica's positions): nothing is derived in its place."""
    unrealized_pnl_usd: Decimal | None
    leverage: str
    """As the venue states it, e.g. `20x isolated`."""
    liquidation_px: Decimal | None
    distance: Decimal | None
    """To liquidation, as a fraction of the mark; None when the venue gives no liquidation price."""


@dataclass(frozen=True, slots=True)
class AccountView:
    address: str
    venue: str
    at: datetime
    account_value_usd: Decimal | None
    """None where the venue's answer carries no account value (Pacifica's positions)."""
    positions: tuple[PositionView, ...]


class AccountUnavailable(Exception):
    """The venue could not be asked now (its budget is spent, it is away): the message says which."""


class NoAccount(AccountUnavailable):
    """The venue answered: it lists no account for the address."""


@runtime_checkable
class AccountLookup(Protocol):
    def follows(self, address: str) -> bool:
        """Whether the address is of this venue's kind (0x, or a Solana address)."""
        ...

    async def account(self, address: str) -> AccountView:
        """Fetched live, within the venue's request budget; raises `AccountUnavailable`, or `NoAccount`
        where the venue lists none for the address."""
        ...
