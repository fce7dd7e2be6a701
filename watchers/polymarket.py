"""TGE hints from Polymarket: open prediction markets about a watched project's launch, for operators to
review (`/calendar hints`), never as a date.

Why only a hint: no free, reliable TGE calendar exists (research §3); a market asking "edgeX FDV above ___
one day after launch?" says traders expect a launch, not when it is. So nothing here becomes a calendar
entry or an alert: an operator reads the hint and, if a project confirms a date, adds it with /calendar add.

Source: the public Gamma API (`PERPWATCH_POLYMARKET_URL`, default https://gamma-api.polymarket.com),
`GET /markets?active=true&closed=false&limit=…&offset=…&order=volume_24hr&ascending=false`, filtered here by
question text: a watched project's name together with a launch word. `outcomes` and `outcomePrices` arrive
as JSON-encoded strings or as arrays; both are read (Polymarket/py-sdk tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from watchers.base import EventSink, Watcher
from watchers.poller import OwnedPoller, PollTuning, Request, RestPoller
from watchers.runtime import WatcherContext

NAME = "polymarket"
GAMMA_URL = "https://gamma-api.polymarket.com"
PAGES = 5
PAGE_SIZE = 100
LAUNCH_WORDS = re.compile(r"\b(launch|launches|tge|token|airdrop|fdv)\b", re.IGNORECASE)
MAX_HINTS = 50


class PolymarketSettings(Protocol):
    @property
    def polymarket_url(self) -> str: ...

    @property
    def polymarket_projects(self) -> Sequence[str]: ...

    @property
    def polymarket_poll_s(self) -> float: ...


def _listed(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw, parse_float=Decimal)
        except json.JSONDecodeError:
            return []
    return raw if isinstance(raw, list) else []


def parse_hints(markets: Any, projects: Sequence[str], *, seen_at: datetime) -> list[dict[str, Any]]:
    """Markets whose question names a watched project and a launch word, as plain hint records."""
    hints: list[dict[str, Any]] = []
    if not isinstance(markets, list):
        return hints
    for market in markets:
        if not isinstance(market, dict) or not isinstance(market.get("question"), str):
            continue
        question = market["question"]
        if market.get("closed") is True or not LAUNCH_WORDS.search(question):
            continue
        project = next(
            (p for p in projects if re.search(rf"(?<![A-Za-z0-9]){re.escape(p)}(?![A-Za-z0-9])", question, re.I)),
            None,
        )
        if project is None:
            continue
        outcomes = [str(o) for o in _listed(market.get("outcomes"))]
        prices = _listed(market.get("outcomePrices"))
        odds = {
            name: str(price)
            for name, price in zip(outcomes, prices, strict=False)
            if isinstance(price, str | int | Decimal)
        }
        slug = market.get("slug") if isinstance(market.get("slug"), str) else None
        hints.append(
            {
                "project": project,
                "question": question[:200],
                "url": f"https://polymarket.com/market/{slug}" if slug else None,
                "end_date": market.get("endDate") if isinstance(market.get("endDate"), str) else None,
                "odds": odds,
                "seen_at": seen_at.isoformat(),
            }
        )
    return hints[:MAX_HINTS]


class PolymarketHintsWatcher(Watcher):
    def __init__(self, settings: PolymarketSettings, ctx: WatcherContext) -> None:
        super().__init__(ctx.name, frozenset(), clock=ctx.clock)
        self.base = settings.polymarket_url.rstrip("/")
        self.projects = tuple(settings.polymarket_projects)
        self.poll_s = settings.polymarket_poll_s
        self.ctx = ctx
        ctx.budgets.declare(self.base, 30)
        self.health.note = "Launch markets as hints for operators (/calendar hints), never as dates"

    async def refresh(self, poller: RestPoller) -> None:
        now = self.clock.now()
        hints: list[dict[str, Any]] = []
        for page in range(PAGES):
            markets = await poller.get_json(
                Request(
                    f"{self.base}/markets",
                    params={
                        "active": "true",
                        "closed": "false",
                        "limit": str(PAGE_SIZE),
                        "offset": str(page * PAGE_SIZE),
                        "order": "volume_24hr",
                        "ascending": "false",
                    },
                )
            )
            if not isinstance(markets, list):
                raise ValueError("Gamma /markets did not answer a list")
            hints += parse_hints(markets, self.projects, seen_at=now)
            if len(markets) < PAGE_SIZE:
                break
        await self.ctx.state.put("hints", {"fetched_at": now.isoformat(), "hints": hints[:MAX_HINTS]})
        self.health.extra["hints"] = str(len(hints))

    async def run(self, sink: EventSink) -> None:
        poller = OwnedPoller(self, PollTuning(interval_s=self.poll_s, jitter=0.1, retry_initial_s=60.0))
        task = asyncio.create_task(poller.run(), name=f"{self.name}:poll")
        try:
            await task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
