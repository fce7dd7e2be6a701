"""Loopback calendar sources: DefiLlama's emissions dataset host, CoinGecko's /coins/markets and Polymarket's
Gamma /markets, on one FakeRest, with bodies built to the field lists in research/unlocks-buybacks-tge.md.

No real `/emissions/{slug}` payload was found (§1.1), so `emissions_object` follows the producing code's
shape (DefiLlama/emissions-adapters runner/utils.ts, utils/events.ts): `name`, `gecko_id`, `metadata` with
`token` "coingecko:<id>", `sources`, `total` and `events[]` of cliffs (`noOfTokens:[amount]`) and linear
rate changes (`noOfTokens:[old, new]` weekly rates), timestamps in unix seconds. `wrapped` is the Pro API's
string-wrapped form of the same object (`{"body": "<JSON string>", "lastModified": …}`, DefiLlama/api-sdk).
Gamma markets carry `outcomes`/`outcomePrices` as JSON-encoded strings, as the official SDK's tests show.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from perpwatch.clock import Clock
from tests.fakes.rest import FakeRest


def cliff(
    at: datetime, amount: int | str, category: str = "insiders", section: str = "Core Contributors"
) -> dict[str, Any]:
    stamp = int(at.timestamp())
    return {
        "description": f"A cliff of {amount} tokens will be unlocked from {section} on {stamp}",
        "timestamp": stamp,
        "noOfTokens": [amount],
        "category": category,
        "unlockType": "cliff",
    }


def linear(at: datetime, old: int, new: int) -> dict[str, Any]:
    stamp = int(at.timestamp())
    return {
        "description": f"Linear unlock will increase from {old} to {new} tokens per week from Team on {stamp}",
        "timestamp": stamp,
        "noOfTokens": [old, new],
        "category": "insiders",
        "unlockType": "linear",
        "rateDurationDays": 7,
    }


def emissions_object(
    events: list[dict[str, Any]], *, name: str = "Hyperliquid", gecko: str = "hyperliquid"
) -> dict[str, Any]:
    return {
        "name": name,
        "gecko_id": gecko,
        "metadata": {
            "token": f"coingecko:{gecko}",
            "sources": ["https://hyperfnd.medium.com/hype-genesis-1830a4dc2e3f"],
            "protocolIds": ["5507"],
            "notes": [],
            "total": 1000000000,
            "events": events,
            "unlockEvents": [],
        },
        "documentedData": {"data": [], "tokenAllocation": {}},
        "categories": {"insiders": ["Core Contributors"]},
        "unlockUsdChart": [],
    }


def wrapped(obj: dict[str, Any]) -> dict[str, Any]:
    return {"body": json.dumps(obj), "lastModified": "2026-11-20T00:00:00.000Z"}


def coingecko_market(coin: str, price: str, circulating: str | None, total: str | None) -> dict[str, Any]:
    """One `/coins/markets` item (raw JSON numbers, as CoinGecko sends them)."""
    return {
        "id": coin,
        "symbol": coin[:4],
        "name": coin,
        "current_price": _Raw(price),
        "circulating_supply": _Raw(circulating) if circulating else None,
        "total_supply": _Raw(total) if total else None,
    }


def gamma_market(question: str, *, slug: str, yes: str, closed: bool = False, strings: bool = True) -> dict[str, Any]:
    outcomes: Any = ["Yes", "No"]
    prices: Any = [yes, str(Decimal(1) - Decimal(yes))]
    return {
        "id": slug,
        "slug": slug,
        "question": question,
        "outcomes": json.dumps(outcomes) if strings else outcomes,
        "outcomePrices": json.dumps(prices) if strings else prices,
        "active": not closed,
        "closed": closed,
        "endDate": "2026-12-31T12:00:00Z",
        "volume": "1000",
    }


class _Raw(str):
    """A number written into the JSON as its exact text (CoinGecko sends JSON numbers)."""


def _dumps(value: Any) -> str:
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)


class CalendarSources(FakeRest):
    """FakeRest that also answers raw text for a path (a malformed body) and writes numbers exactly."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.raw: dict[str, str] = {}

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path in self.raw and not self.status_next and not self.limited:
            self.seen.append(_seen(request, self.clock))
            self.arrived.set()
            return web.Response(text=self.raw[request.path], content_type="application/json")
        if request.path in self.bodies and not self.status_next and not self.limited and not self.down:
            body = self.bodies[request.path]
            self.seen.append(_seen(request, self.clock))
            self.arrived.set()
            return web.Response(text=_dumps(body() if callable(body) else body), content_type="application/json")
        return await super()._handle(request)


def _seen(request: web.Request, clock: Clock) -> Any:
    from tests.fakes.rest import Seen

    return Seen(request.path, clock.monotonic(), 1, 200, request.query_string)
