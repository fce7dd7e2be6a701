"""Whales: a watched wallet's position changes and liquidation-distance warnings, and large trades by anyone.

Wallets are shown shortened (0x1234…abcd) with the explorer link, so a chat can check every figure at the
source; figures the source did not give are left out rather than shown as zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from bot.families.registry import Family, register
from bot.known_wallets import label_for
from bot.render import Alert, AlertField, number, price, usd, when
from perpwatch.events import DistanceBody, Event, PositionBody, PositionSide, Venue, WhaleTradeBody

EXPLORER = "https://app.hyperliquid.xyz/explorer/address/"
"""Hyperliquid's own explorer page of an address (research §1.1)."""


def short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"


def _side(side: PositionSide | None) -> str:
    return "flat" if side is None else side.value.upper()


def _on(event: Event) -> str:
    """` on Lighter` for a venue other than Hyperliquid (whose alerts read as they always did): one 0x
    address may hold positions on both."""
    return "" if event.venue in (None, Venue.HYPERLIQUID) else f" on {event.venue.value.capitalize()}"


def _percent(fraction: Decimal) -> str:
    return f"{fraction * 100:.1f}%"


def _position(event: Event) -> PositionBody:
    if not isinstance(event.body, PositionBody):
        raise TypeError(f"not a position body: {event.body.kind}")
    return event.body


_CHANGE_WORDS = {
    "opened": "opened",
    "increased": "increased",
    "reduced": "cut",
    "closed": "closed",
    "flipped": "flipped",
}


def _headline(body: PositionBody) -> str:
    """`ETH LONG increased`, `ETH SHORT closed`, `ETH LONG (was SHORT) flipped`."""
    side = body.side_after or body.side_before
    was = f" (was {_side(body.side_before)})" if body.change == "flipped" else ""
    return f"{body.coin} {_side(side)}{was} {_CHANGE_WORDS[body.change]}"


def render_position(event: Event, names: Mapping[str, str] | None = None) -> Alert:
    body = _position(event)
    before = f"{_side(body.side_before)} {number(body.size_before)}" if body.size_before else "flat"
    after = f"{_side(body.side_after)} {number(body.size_after)}" if body.size_after else "flat"
    side = body.side_after or body.side_before
    fields = [
        AlertField("Position", f"{before} → {after} {body.coin}", emphasis=True),
        AlertField("USD", usd(body.notional_usd), emphasis=True),
    ]
    if body.price is not None:
        fields.append(AlertField("Exit price" if body.change in ("reduced", "closed") else "Price", price(body.price)))
    if body.entry_px is not None:
        fields.append(AlertField("Entry", price(body.entry_px)))
    if body.leverage is not None:
        fields.append(AlertField("Leverage", f"{body.leverage}x"))
    if body.realised_pnl_usd is not None:
        sign = "+" if body.realised_pnl_usd >= 0 else "−"
        fields.append(AlertField("Realised PnL", f"{sign}{usd(abs(body.realised_pnl_usd))}"))
    fields += [AlertField("Wallet", _named(body.wallet, None, names)), AlertField("Time", when(event.occurred_at))]
    icon = "🐋" if body.change in ("opened", "increased", "flipped") else "🏁" if body.change == "closed" else "✂️"
    snapshot = "Seen in a snapshot, not as fills: no trade price." if body.seen_by == "snapshot" else None
    return Alert(
        title=f"{icon} {_who(body.wallet, names)}: {_headline(body)}{_on(event)}",
        headline=usd(body.notional_usd),
        fields=tuple(fields),
        tone="long" if side is PositionSide.LONG else "short",
        footer=" ".join(part for part in (body.note, snapshot) if part) or None,
        url=event.link,
        link_label="wallet on the explorer",
        data={
            "topic": event.topic.value,
            "wallet": body.wallet,
            "coin": body.coin,
            "change": body.change,
            "usd": format(body.notional_usd, "f"),
            "key": event.key,
        },
    )


def position_line(event: Event) -> str:
    body = _position(event)
    return f"{_who(body.wallet, None)}: {_headline(body)}{_on(event)} {usd(body.notional_usd)}"


def _distance(event: Event) -> DistanceBody:
    if not isinstance(event.body, DistanceBody):
        raise TypeError(f"not a distance body: {event.body.kind}")
    return event.body


def render_distance(event: Event, names: Mapping[str, str] | None = None) -> Alert:
    body = _distance(event)
    gone = body.distance <= 0
    return Alert(
        title=f"⚠️ {_who(body.wallet, names)} {body.coin} {_side(body.side)} "
        + ("is past its liquidation price" if gone else f"within {_percent(body.threshold)} of liquidation")
        + _on(event),
        headline=_percent(body.distance),
        fields=(
            AlertField(
                "Distance",
                f"{_percent(body.distance)} (mark {price(body.mark_px)}, liquidation {price(body.liquidation_px)})",
                emphasis=True,
            ),
            AlertField("Position", f"{_side(body.side)} {number(body.size)} {body.coin}"),
            AlertField("USD", usd(body.notional_usd)),
            AlertField("Wallet", _named(body.wallet, None, names)),
            AlertField("Time", when(event.occurred_at)),
        ),
        tone="long" if body.side is PositionSide.LONG else "short",
        footer="Updated in place as the distance changes; a liquidation is confirmed only from fills or the ledger."
        if event.venue in (None, Venue.HYPERLIQUID)
        else "Updated in place as the distance changes.",
        url=event.link,
        link_label="wallet on the explorer",
        data={
            "topic": event.topic.value,
            "wallet": body.wallet,
            "coin": body.coin,
            "distance": format(body.distance, "f"),
            "key": event.key,
        },
    )


def distance_line(event: Event) -> str:
    body = _distance(event)
    gap = _percent(body.distance)
    return f"{_who(body.wallet, None)} {body.coin} {_side(body.side)} {gap} from liquidation{_on(event)}"


def _trade(event: Event) -> WhaleTradeBody:
    if not isinstance(event.body, WhaleTradeBody):
        raise TypeError(f"not a whale trade body: {event.body.kind}")
    return event.body


def _label(address: str, names: Mapping[str, str] | None) -> str | None:
    """The reading chat's own label of the wallet, else the bundled list's name (bot/data/known_wallets.toml)."""
    return (names or {}).get(address) or label_for(address)


def _who(address: str, names: Mapping[str, str] | None) -> str:
    """How a title names a wallet: its label, else its short form."""
    return _label(address, names) or short(address)


def _named(address: str, label: str | None, names: Mapping[str, str] | None = None) -> str:
    label = label or _label(address, names)
    return f"{label} ({short(address)})" if label else address


def render_trade(event: Event, names: Mapping[str, str] | None = None) -> Alert:
    body = _trade(event)
    verb = "bought" if body.taker_side == "buy" else "sold"
    return Alert(
        title=f"🐳 {usd(body.notional_usd)} of {body.coin} {verb} on Hyperliquid",
        headline=usd(body.notional_usd),
        fields=(
            AlertField("Size", f"{number(body.size)} {body.coin}", emphasis=True),
            AlertField("Price", price(body.price)),
            AlertField("Taker", "buyer" if body.taker_side == "buy" else "seller"),
            AlertField("Buyer", _named(body.buyer, body.buyer_label, names)),
            AlertField("Seller", _named(body.seller, body.seller_label, names)),
            AlertField("Time", when(event.occurred_at)),
        ),
        tone="long" if body.taker_side == "buy" else "short",
        footer=None,
        url=event.link,
        link_label="taker on the explorer",
        data={"topic": event.topic.value, "coin": body.coin, "usd": format(body.notional_usd, "f"), "key": event.key},
    )


def trade_line(event: Event) -> str:
    body = _trade(event)
    return f"{usd(body.notional_usd)} {body.coin} {body.taker_side} at {event.occurred_at:%H:%M:%S}"


POSITION = register(
    Family(
        kind="position",
        body=PositionBody,
        render=render_position,
        summary_line=position_line,
        render_named=render_position,
    )
)
DISTANCE = register(
    Family(
        kind="liq_distance",
        body=DistanceBody,
        render=render_distance,
        summary_line=distance_line,
        render_named=render_distance,
    )
)
TRADE = register(
    Family(
        kind="whale_trade", body=WhaleTradeBody, render=render_trade, summary_line=trade_line, render_named=render_trade
    )
)
