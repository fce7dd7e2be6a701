"""USD prices of tokens by CoinGecko id, for anything that needs one (calendar reminders first).

`await prices.price_usd("hyperliquid")` → Decimal or None; `market(id)` adds the circulating and total
supply CoinGecko reports, for "share of circulating supply". CoinGecko's public `/coins/markets` is keyless
and rate limited (a few calls a minute), so answers are cached per id for `ttl_s`, a request waits in the
host's budget like every poller's, and a 429 pauses the host. Any failure is None, never an exception: a
reminder without a price still goes out, without its USD line.

Numbers arrive as JSON numbers; they are decoded straight to Decimal from their text (never through
float). A venue's mark price, where one is known, can be given instead (`marks`): it is the price the
trader's venue actually uses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp

from perpwatch.clock import SYSTEM_CLOCK, Clock
from watchers.poller import BudgetRegistry, SessionSource, retry_after_s, session_of

log = logging.getLogger(__name__)

COINGECKO_URL = "https://api.coingecko.com/api/v3"
REQUESTS_PER_MIN = 5
"""Our share of CoinGecko's keyless limit (documented as varying, 5-30 a minute): the calendar needs a few
prices an hour."""


@dataclass(frozen=True)
class Market:
    price_usd: Decimal
    circulating_supply: Decimal | None = None
    total_supply: Decimal | None = None


def _positive(raw: Any) -> Decimal | None:
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal):
        return None
    value = Decimal(raw)
    return value if value.is_finite() and value > 0 else None


def parse_markets(body: Any) -> dict[str, Market]:
    """`/coins/markets` items by id; an item without a positive price is left out."""
    out: dict[str, Market] = {}
    if not isinstance(body, list):
        return out
    for item in body:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        price = _positive(item.get("current_price"))
        if price is None:
            continue
        out[item["id"]] = Market(price, _positive(item.get("circulating_supply")), _positive(item.get("total_supply")))
    return out


class PriceSource:
    def __init__(
        self,
        base_url: str = COINGECKO_URL,
        *,
        session: SessionSource | None = None,
        budgets: BudgetRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        ttl_s: float = 600.0,
        marks: Callable[[str], Awaitable[Decimal | None]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.clock = clock
        self.budgets = budgets or BudgetRegistry(clock=clock)
        self.budget = self.budgets.declare(self.base_url, REQUESTS_PER_MIN)
        self.ttl_s = ttl_s
        self.marks = marks
        self._cache: dict[str, tuple[float, Market | None]] = {}
        self.errors = 0

    async def price_usd(self, coingecko_id: str) -> Decimal | None:
        market = await self.market(coingecko_id)
        return None if market is None else market.price_usd

    async def market(self, coingecko_id: str) -> Market | None:
        now = self.clock.monotonic()
        cached = self._cache.get(coingecko_id)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        market = await self._fetch(coingecko_id)
        if self.marks is not None:
            mark = await self.marks(coingecko_id)
            if mark is not None:
                market = Market(
                    mark, market.circulating_supply if market else None, market.total_supply if market else None
                )
        self._cache[coingecko_id] = (now, market)
        return market

    async def _fetch(self, coingecko_id: str) -> Market | None:
        url = f"{self.base_url}/coins/markets"
        if self.budget.paused_for_s > 0:
            return None  # rate limited: no price now rather than a wait that holds a reminder back
        try:
            await self.budget.acquire(1)
            async with (
                session_of(self.session) as session,
                session.get(
                    url,
                    params={"vs_currency": "usd", "ids": coingecko_id},
                    timeout=aiohttp.ClientTimeout(total=15),
                ) as response,
            ):
                if response.status == 429:
                    said = retry_after_s(response.headers.get("Retry-After"), self.clock.now())
                    self.budget.pause(said if said is not None else 60.0)
                    raise RuntimeError("HTTP 429")
                if response.status >= 300:
                    raise RuntimeError(f"HTTP {response.status}")
                body = json.loads(await response.text(), parse_float=Decimal)
        except Exception as exc:
            self.errors += 1
            log.warning("price lookup failed source=coingecko id=%s error=%s", coingecko_id, exc)
            return None
        return parse_markets(body).get(coingecko_id)
