"""Whale alerts as a chat reads them: both sides of a trade named, the bundled list's names where it has one."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from bot.families.registry import render_event
from bot.render import plain_text
from perpwatch.events import Event, Topic, Venue, WhaleTradeBody

KNOWN = "0xb317d2bc2d3d2df5fa441b5bae0ab9d8b07283ae"  # in bot/data/known_wallets.toml
OTHER = "0x" + "ab" * 20


def test_a_whale_trade_names_both_sides_and_the_known_one_by_name() -> None:
    body = WhaleTradeBody(
        coin="BTC",
        taker_side="sell",
        size=Decimal(20),
        price=Decimal(90_000),
        notional_usd=Decimal(1_800_000),
        buyer=OTHER,
        seller=KNOWN,
    )
    event = Event(
        key="hl:trade:BTC:1",
        topic=Topic.WHALE,
        source="hyperliquid_whales",
        venue=Venue.HYPERLIQUID,
        symbol="BTC",
        usd=body.notional_usd,
        occurred_at=datetime(2026, 12, 2, 12, tzinfo=UTC),
        link=f"https://app.hyperliquid.xyz/explorer/address/{KNOWN}",
        body=body,
    )
    text = plain_text(render_event(event))
    assert "$1.80M of BTC sold on Hyperliquid" in text
    assert f"Buyer: {OTHER}" in text and "Seller: BitcoinOG (0xb317…83ae)" in text and "Taker: seller" in text


def test_the_reading_chats_own_label_comes_first() -> None:
    body = WhaleTradeBody(
        coin="BTC",
        taker_side="buy",
        size=Decimal(20),
        price=Decimal(90_000),
        notional_usd=Decimal(1_800_000),
        buyer=OTHER,
        seller=KNOWN,
    )
    event = Event(
        key="hl:trade:BTC:2",
        topic=Topic.WHALE,
        source="hyperliquid_whales",
        venue=Venue.HYPERLIQUID,
        symbol="BTC",
        usd=body.notional_usd,
        occurred_at=datetime(2026, 12, 2, 12, tzinfo=UTC),
        body=body,
    )
    text = plain_text(render_event(event, names={OTHER: "desk-buyer", KNOWN: "ours"}))
    assert "Buyer: desk-buyer (0xabab…abab)" in text and "Seller: ours (0xb317…83ae)" in text
    assert "Buyer: " + OTHER in plain_text(render_event(event))  # another chat, no labels of its own
