"""A buyback as DefiLlama estimates it: a protocol's daily holders revenue, in USD.

Why it is an estimate: holders revenue is DefiLlama's USD-per-day figure under its own methodology (fees ×
a published share for some protocols), it lumps in distributions to stakers, and it names no token amount
(research/unlocks-buybacks-tge.md §2.3). Each day is stored as a buy of unknown tokens, basis `estimated`.

Wire shape: `GET https://api.llama.fi/summary/fees/{slug}?dataType=dailyHoldersRevenue` (dataType enum from
DefiLlama/api-docs:defillama-openapi-free.json, research §2.3) → an object with `totalAllTime` and
`totalDataChart: [[unixSeconds at UTC midnight, usd number], …]` (real capture
`payloads/defillama_summaryFees_hyperliquid_dailyHoldersRevenue_real2026_excerpt.json`). An unknown slug is a
client error "Fees for … not found, please visit /overview/fees to see available protocols" (same capture's
notes, from rujole13/hype-buyback-dashboard:samples/_manifest.json).

Why only complete days: the last point of the chart is the day under way, still growing; a day is counted once
its UTC day has ended, and the cursor is the last day counted, so a later read of a counted day (DefiLlama
refills history) changes nothing here.

Not found in any source: a body that is a JSON string wrapping the object. Neither the capture nor the docs
show one, so such a body is refused as malformed like any other that is not the object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from perpwatch.buybacks import Buy, Fetched, ProgrammeKind, RunningTotal, SourceContext
from perpwatch.events import parse_decimal
from watchers.poller import HttpStatusError, Request

URL_SETTING = "defillama_api_url"
DEFAULT_URLS: dict[str, str] = {URL_SETTING: "https://api.llama.fi"}

DAY_S = 86_400
_SLUG = re.compile(r"^[a-z0-9][a-z0-9.-]{0,79}$")
"""Slugs as DefiLlama shows them (`hyperliquid`, `hyperliquid-spot-orderbook`, `whale.ag`)."""
_PARAMS = ("slug",)


def parse_chart(body: object) -> tuple[list[tuple[datetime, Decimal]], Decimal]:
    """`([(UTC day start, usd)] sorted, totalAllTime)` from a summary answer; a day listed twice, a point not at
    midnight UTC, a negative figure or a missing key is refused."""
    if isinstance(body, str):
        raise ValueError("DefiLlama answered a JSON string, not the summary object")
    if not isinstance(body, dict):
        raise ValueError(f"DefiLlama answer is not the summary object: {str(body)[:120]}")
    chart = body.get("totalDataChart")
    if not isinstance(chart, list):
        raise ValueError(f"DefiLlama summary has no totalDataChart list: {str(chart)[:120]}")
    total = parse_decimal(body.get("totalAllTime"), "totalAllTime")
    days: dict[datetime, Decimal] = {}
    for i, point in enumerate(chart):
        where = f"totalDataChart[{i}]"
        if not isinstance(point, list) or len(point) != 2:
            raise ValueError(f"{where}={str(point)[:80]} is not a [unixSeconds, usd] pair")
        second, usd = point
        if isinstance(second, bool) or not isinstance(second, int) or second < 0 or second % DAY_S:
            raise ValueError(f"{where} time={str(second)[:40]!r} is not a UTC midnight in Unix seconds")
        value = parse_decimal(usd, f"{where} usd")
        if value < 0:
            raise ValueError(f"{where} usd={value} is negative")
        day = datetime.fromtimestamp(second, tz=UTC)
        if day in days:
            raise ValueError(f"{where} lists {day.date()} a second time")
        days[day] = value
    return sorted(days.items()), total


class DefiLlamaHoldersRevenue:
    """`defillama_holders_revenue`: one DefiLlama slug's daily holders revenue."""

    kind: ProgrammeKind = "defillama_holders_revenue"

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise ValueError(f"unknown parameter {', '.join(unknown)}; this kind takes slug")
        slug = params.get("slug")
        if not isinstance(slug, str) or not _SLUG.match(slug):
            raise ValueError(f"slug must be a DefiLlama slug like hyperliquid, got {str(slug)[:60]!r}")
        return {"slug": slug}

    async def fetch(self, ctx: SourceContext) -> Fetched:
        slug = self.validate(ctx.programme.params)["slug"]
        base = ctx.urls.get(URL_SETTING, DEFAULT_URLS[URL_SETTING]).rstrip("/")
        try:
            body = await ctx.get_json(
                Request(f"{base}/summary/fees/{slug}", params={"dataType": "dailyHoldersRevenue"})
            )
        except HttpStatusError as exc:
            if exc.status in (400, 404):
                raise ValueError(
                    f"DefiLlama has no holders revenue for slug {slug!r} ({exc}); /overview/fees lists the slugs"
                ) from exc
            raise
        days, total = parse_chart(body)
        last = self._cursor(ctx.cursor)
        buys = []
        counted = last
        for day, usd in days:
            if last is not None and day <= last:
                continue
            if day + timedelta(days=1) > ctx.now:
                break  # the day under way, and any after it
            counted = day
            if usd == 0:
                continue
            buys.append(
                Buy(
                    key=f"day:{day.date().isoformat()}",
                    start=day,
                    end=day + timedelta(days=1),
                    tokens=None,
                    usd=usd,
                    basis="estimated",
                )
            )
        running = RunningTotal(
            tokens=None,
            usd=total,
            source=f"DefiLlama holders revenue of {slug} (totalAllTime)",
            as_of=ctx.now,
        )
        cursor = None if counted is None else counted.date().isoformat()
        return Fetched(buys=buys, cursor=cursor, running_total=running)

    @staticmethod
    def _cursor(cursor: object) -> datetime | None:
        if cursor is None:
            return None
        if not isinstance(cursor, str):
            raise ValueError(f"stored cursor {str(cursor)[:80]} is not a day")
        try:
            return datetime.fromisoformat(cursor).replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(f"stored cursor {cursor[:80]!r} is not a day") from None


SOURCE = DefiLlamaHoldersRevenue()
