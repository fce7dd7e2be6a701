"""Liquidations: one position force-closed on a venue."""

from __future__ import annotations

from bot.families.registry import Family, register
from bot.render import Alert, AlertField, number, price, usd, when
from perpwatch.events import Event, LiquidationBody, PositionSide
from perpwatch.symbols import base_asset


def _body(event: Event) -> LiquidationBody:
    body = event.body
    if not isinstance(body, LiquidationBody):  # the registry routes by kind; this only narrows the type
        raise TypeError(f"not a liquidation body: {body.kind}")
    return body


def _venue(event: Event) -> str:
    return event.venue.value.capitalize() if event.venue else event.source


def render(event: Event) -> Alert:
    body = _body(event)
    venue = _venue(event)
    symbol = event.symbol or "?"
    side_word = "LONG" if body.side is PositionSide.LONG else "SHORT"
    what = "auto-deleveraged" if body.cause == "adl" else "liquidated"
    icon = "🟧" if body.cause == "adl" else "🟥" if body.side is PositionSide.LONG else "🟩"
    fields = [
        AlertField("Side", f"{side_word} {what}"),
        AlertField("Size", f"{number(body.size)} {base_asset(symbol)}", emphasis=True),
        AlertField("USD", usd(body.notional_usd), emphasis=True),
        AlertField("Price", price(body.price)),
        AlertField("Venue", venue),
        AlertField("Time", when(event.occurred_at)),
    ]
    if body.method:
        fields.append(
            AlertField("Method", "backstop (taken by the venue's vault)" if body.method == "backstop" else "market")
        )
    if body.account:
        fields.append(AlertField("Account", body.account))
    return Alert(
        title=f"{icon} {symbol} {side_word} {what} on {venue}",
        headline=usd(body.notional_usd),
        fields=tuple(fields),
        tone="long" if body.side is PositionSide.LONG else "short",
        footer=body.note,
        url=event.link,
        link_label=f"{symbol} on {venue}",
        data={
            "topic": event.topic.value,
            "venue": event.venue.value if event.venue else None,
            "symbol": event.symbol,
            "side": body.side.value,
            "usd": format(event.usd, "f") if event.usd is not None else None,
            "key": event.key,
        },
    )


def summary_line(event: Event) -> str:
    body = _body(event)
    amount = usd(event.usd) if event.usd is not None else "?"
    adl = " (ADL)" if body.cause == "adl" else ""
    return f"{amount} {event.symbol or '?'} {body.side.value}{adl} on {_venue(event)} at {event.occurred_at:%H:%M:%S}"


FAMILY = register(Family(kind="liquidation", body=LiquidationBody, render=render, summary_line=summary_line))
