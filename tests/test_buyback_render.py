"""What a buyback alert says: every figure with its source and basis, a floor said to be one, and a programme's
own running total beside ours."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from bot.families import render_event
from bot.render import plain_text
from perpwatch.events import BuybackLine, BuybackMilestoneBody, BuybackSummaryBody, Event, Topic

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _line(**changes: object) -> BuybackLine:
    base: dict[str, object] = {
        "programme": "hyperliquid-af",
        "symbol": "HYPE",
        "window": "24h",
        "tokens": Decimal("41234.5"),
        "usd": Decimal("1190000"),
        "avg_price": Decimal("28.86"),
        "share_of_supply": Decimal("0.0000412345"),
        "source": "https://hyperliquid.gitbook.io/hyperliquid-docs/trading/fees",
        "published_tokens": Decimal("47942118.5"),
        "published_usd": Decimal("1359925585.35"),
        "published_source": "spotClearinghouseState of 0xfefe…fefe",
    }
    return BuybackLine.model_validate({**base, **changes})


def _event(body: BuybackSummaryBody | BuybackMilestoneBody) -> Event:
    return Event(key="k", topic=Topic.BUYBACK, source="buyback_reports", occurred_at=T0, body=body, audience=1)


def test_a_summary_names_each_source_and_basis_and_keeps_small_shares_visible() -> None:
    llama = _line(
        programme="hl-llama",
        tokens=None,
        avg_price=None,
        share_of_supply=None,
        basis="estimated",
        source="DefiLlama dailyHoldersRevenue",
        published_tokens=None,
        published_usd=None,
        published_source=None,
    )
    text = plain_text(render_event(_event(BuybackSummaryBody(day="2026-12-02", zone="UTC", lines=(_line(), llama)))))
    assert "+41,234 HYPE · $1.19M · avg $28.86 · 0.0041% of supply [measured;" in text
    assert "published total 47,942,118 HYPE · $1.36B (spotClearinghouseState of 0xfefe…fefe)" in text
    assert "hl-llama (HYPE) 24h: tokens not measured · $1.19M [estimated; DefiLlama dailyHoldersRevenue]" in text
    assert "incomplete" not in text.lower()
    assert "USD, measured and up: $1.19M" in text  # the estimate is shown, not added to the measured figure


def test_a_floor_says_why_in_the_line_and_the_footer() -> None:
    line = _line(incomplete="source failing since 2026-12-02 03:00 UTC (last good 2026-12-02 02:55 UTC)")
    text = plain_text(render_event(_event(BuybackSummaryBody(day="2026-12-02", zone="Europe/Berlin", lines=(line,)))))
    assert "⚠ incomplete: source failing since 2026-12-02 03:00 UTC" in text
    assert "Incomplete figures: hyperliquid-af." in text and "(Europe/Berlin)" in text
    assert "USD, measured and up: $0.00" in text  # a failing source's floor is not the total


def test_a_milestone_reads_what_was_passed_with_the_running_totals() -> None:
    line = _line(window="all", total_tokens=Decimal("2000123"), total_usd=Decimal("57000000"), tracked_since=T0)
    body = BuybackMilestoneBody(unit="tokens", step=Decimal(1_000_000), reached=Decimal(2_000_000), line=line)
    text = plain_text(render_event(_event(body)))
    assert text.startswith("🏁 hyperliquid-af buybacks passed 2,000,000 HYPE")
    assert (
        "Bought: 2,000,123 HYPE" in text and "USD: $57.0M" in text and "Counted since: 2026-12-02 09:00:00 UTC" in text
    )
    assert "Published total: 47,942,118 HYPE · $1.36B" in text
