"""USD prices of tokens by CoinGecko id, for anything that needs one (calendar reminders first).

`await prices.price_usd("hyperliquid")` → Decimal or None; `market(id)` adds the circulating and total
supply CoinGecko reports, for "share of circulating supply". CoinGecko's public `/coins/markets` is keyless
and rate limited (a few calls a minute), so answers are cached per id for `ttl_s`, a request waits in the
host's budget like every poller's, and a 429 pauses the host. Any failure is None, never an exception: a
reminder without a price still goes out, without its USD line.

Numbers arrive as JSON numbers; they are decoded straight to Decimal from their text (never through
float). A venue's mark price, where one is known, comes first (`marks`): it is the price the trader's venue
actually uses. `HyperliquidMarks` is one: Hyperliquid's `metaAndAssetCtxs` (every perp's `markPx` in one
request of weight 20, research/exchange-apis.md §1) for a token that trades there as a perp, cached for a
minute. A mark is used only for a token keyed by the CoinGecko id that perp is known to trade
(`HYPERLIQUID_PERPS`) and named by that perp's coin: a ticker alone never matches (two tokens trade as EDGE),
so a token keyed by a contract only, or by another id, gets CoinGecko's price or none. Each `Market` says
which source its price came from (`source`), and a reminder says it beside the price.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Protocol

from perpwatch.clock import SYSTEM_CLOCK, Clock
from watchers.lookup import fetch_now
from watchers.poller import BudgetRegistry, Request, SessionSource

log = logging.getLogger(__name__)

COINGECKO_URL = "https://api.coingecko.com/api/v3"
REQUESTS_PER_MIN = 5
"""Our share of CoinGecko's keyless limit (documented as varying, 5-30 a minute): the calendar needs a few
prices an hour."""


COINGECKO = "CoinGecko"

HYPERLIQUID_INFO_URL = "https://api.hyperliquid.xyz/info"
HYPERLIQUID_PER_MIN = 1150
"""The IP's 1,200 weight a minute less a reserve, as every module on that host declares it (hl_account)."""
META_AND_ASSET_CTXS_WEIGHT = 20
"""`metaAndAssetCtxs` is one of "all other documented info requests": weight 20 (research §1.4)."""
HYPERLIQUID_MARK = "Hyperliquid mark"

HYPERLIQUID_PERPS: Mapping[str, str] = MappingProxyType({"hyperliquid": "HYPE", "aster-2": "ASTER"})
"""CoinGecko id -> the Hyperliquid perp (first perp dex) that trades that very token: HYPE is Hyperliquid's
own, ASTER Aster's (both listed on Hyperliquid). A token is added here only once the perp is known to be
that token; a perp whose coin merely shares a ticker (EDGE, LIT) is never assumed to."""


@dataclass(frozen=True)
class Market:
    price_usd: Decimal
    circulating_supply: Decimal | None = None
    total_supply: Decimal | None = None
    source: str = COINGECKO
    """Where `price_usd` came from, said beside it: "CoinGecko" or a venue's mark ("Hyperliquid mark")."""


class MarkSource(Protocol):
    """A venue's mark price of a token: None when the venue has no perp of that very token, or it failed."""

    name: str

    async def mark(self, coingecko_id: str, token: str | None) -> Decimal | None: ...


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
        marks: MarkSource | None = None,
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

    async def price_usd(self, coingecko_id: str, token: str | None = None) -> Decimal | None:
        market = await self.market(coingecko_id, token)
        return None if market is None else market.price_usd

    async def market(self, coingecko_id: str, token: str | None = None) -> Market | None:
        """The price of the token CoinGecko calls `coingecko_id` (named `token`, the ticker, which only a mark
        source reads): a venue's mark first, else CoinGecko's; the supply figures are CoinGecko's either way."""
        mark = None
        if self.marks is not None:
            try:
                mark = await self.marks.mark(coingecko_id, token)
            except Exception as exc:  # a mark source's own failure is its business: CoinGecko's price then
                log.warning("mark price failed source=%s id=%s error=%r", self.marks.name, coingecko_id, exc)
        market = await self._coingecko(coingecko_id)
        if mark is None or self.marks is None:
            return market
        if market is None:
            return Market(mark, source=self.marks.name)
        return Market(mark, market.circulating_supply, market.total_supply, source=self.marks.name)

    async def _coingecko(self, coingecko_id: str) -> Market | None:
        now = self.clock.monotonic()
        cached = self._cache.get(coingecko_id)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        market = await self._fetch(coingecko_id)
        self._cache[coingecko_id] = (now, market)
        return market

    async def _fetch(self, coingecko_id: str) -> Market | None:
        url = f"{self.base_url}/coins/markets"
        if self.budget.paused_for_s > 0:
            return None  # rate limited: no price now rather than a wait that holds a reminder back
        try:
            request = Request(url, params={"vs_currency": "usd", "ids": coingecko_id}, weight=1)
            body = await fetch_now(self.session, self.budget, request, "CoinGecko")
        except Exception as exc:
            self.errors += 1
            log.warning("price lookup failed source=coingecko id=%s error=%s", coingecko_id, exc)
            return None
        return parse_markets(body).get(coingecko_id)


def parse_marks(body: Any) -> dict[str, Decimal]:
    """`metaAndAssetCtxs`' `[meta, ctxs]` as coin -> `markPx` (the two lists pair by index); a delisted coin or
    one without a positive mark is left out, and a body of another shape gives nothing."""
    if not isinstance(body, list) or len(body) != 2 or not isinstance(body[0], dict):
        return {}
    universe, ctxs = body[0].get("universe"), body[1]
    if not isinstance(universe, list) or not isinstance(ctxs, list):
        return {}
    out: dict[str, Decimal] = {}
    for asset, ctx in zip(universe, ctxs, strict=False):
        if not isinstance(asset, dict) or not isinstance(ctx, dict) or asset.get("isDelisted"):
            continue
        name, raw = asset.get("name"), ctx.get("markPx")
        if not isinstance(name, str) or not isinstance(raw, str):
            continue
        try:
            mark = Decimal(raw)
        except ArithmeticError:
            continue
        if mark.is_finite() and mark > 0:
            out[name] = mark
    return out


class HyperliquidMarks:
    """Mark prices of the tokens that trade as Hyperliquid perps (`perps`), read in one `metaAndAssetCtxs`
    request (weight 20, in the host's shared budget) and cached for `ttl_s`. A failure (an error status, a
    429, which pauses the host, or a body of another shape) is None for every token until the next try after
    `retry_s`: CoinGecko's price then."""

    name = HYPERLIQUID_MARK

    def __init__(
        self,
        info_url: str = HYPERLIQUID_INFO_URL,
        *,
        session: SessionSource | None = None,
        budgets: BudgetRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        ttl_s: float = 60.0,
        retry_s: float = 60.0,
        perps: Mapping[str, str] = HYPERLIQUID_PERPS,
    ) -> None:
        self.info_url = info_url
        self.session = session
        self.clock = clock
        self.budgets = budgets or BudgetRegistry(clock=clock)
        self.budget = self.budgets.declare(info_url, HYPERLIQUID_PER_MIN)
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self.perps = perps
        self._read: tuple[float, dict[str, Decimal]] | None = None
        self._lock = asyncio.Lock()
        self.errors = 0

    def coin_for(self, coingecko_id: str, token: str | None) -> str | None:
        """The perp's coin when the token keyed `coingecko_id` is the one that perp trades and is named by it."""
        coin = self.perps.get(coingecko_id)
        return coin if coin is not None and token is not None and token.upper() == coin else None

    async def mark(self, coingecko_id: str, token: str | None) -> Decimal | None:
        coin = self.coin_for(coingecko_id, token)
        if coin is None:
            return None
        async with self._lock:  # reminders falling due together share one read
            now = self.clock.monotonic()
            if self._read is None or now >= self._read[0]:
                marks = await self._fetch()
                self._read = (now + (self.ttl_s if marks else self.retry_s), marks)
            return self._read[1].get(coin)

    async def _fetch(self) -> dict[str, Decimal]:
        if self.budget.paused_for_s > 0:
            return {}  # rate limited: CoinGecko's price now rather than a wait that holds a reminder back
        try:
            request = Request(
                self.info_url, "POST", json_body={"type": "metaAndAssetCtxs"}, weight=META_AND_ASSET_CTXS_WEIGHT
            )
            body = await fetch_now(self.session, self.budget, request, "Hyperliquid")
            marks = parse_marks(body)
            if not marks:
                raise ValueError(f"no mark prices in the answer: {str(body)[:120]}")
        except Exception as exc:
            self.errors += 1
            log.warning("price lookup failed source=hyperliquid type=metaAndAssetCtxs error=%s", exc)
            return {}
        return marks
