"""One renderer: an event (or a merged batch) becomes neutral rich text that every platform can draw.

Platforms decide only markup: Telegram HTML, a Discord embed, console plain text. What an alert says, and
how numbers are rounded for people, is decided once, here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from bot.events import Event, LiquidationBody, PositionSide
from bot.symbols import base_asset

Tone = Literal["long", "short", "neutral"]


@dataclass(frozen=True)
class AlertField:
    name: str
    value: str
    emphasis: bool = False


@dataclass(frozen=True)
class Alert:
    """Neutral rich text. `headline` is the figure a trader's eye should land on first."""

    title: str
    headline: str
    fields: tuple[AlertField, ...]
    tone: Tone = "neutral"
    footer: str | None = None
    url: str | None = None
    link_label: str = "details"
    items: tuple[str, ...] = ()
    data: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A command's answer, platform-neutral: a bold title and plain lines."""

    lines: tuple[str, ...]
    title: str | None = None
    ok: bool = True

    @classmethod
    def of(cls, *lines: str, title: str | None = None, ok: bool = True) -> Reply:
        return cls(lines=tuple(lines), title=title, ok=ok)

    def plain(self) -> str:
        head = [self.title] if self.title else []
        return "\n".join([*head, *self.lines])


def usd(amount: Decimal) -> str:
    """$950, $12.3K, $1.25M, $2.1B: traders read magnitude first."""
    value = abs(amount)
    sign = "-" if amount < 0 else ""
    for limit, suffix in ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(10) ** 3, "K")):
        if value >= limit:
            scaled = value / limit
            digits = 2 if scaled < 10 else 1 if scaled < 100 else 0
            return f"{sign}${scaled:.{digits}f}{suffix}"
    return f"{sign}${value:,.2f}"


def number(amount: Decimal) -> str:
    """Plain number with thousands separators and no exponent or trailing zeros."""
    text = f"{amount:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def price(amount: Decimal) -> str:
    """Cents above 1,000; the venue's own precision below (small caps trade at 0.0000123)."""
    if amount >= 1000:
        return number(amount.quantize(Decimal("0.01")))
    return number(amount)


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def render_event(event: Event) -> Alert:
    body = event.body
    if isinstance(body, LiquidationBody):
        return _liquidation(event, body)
    raise TypeError(f"no renderer for {type(body).__name__}")  # pragma: no cover - grows with bodies


def _liquidation(event: Event, body: LiquidationBody) -> Alert:
    venue = event.venue.value.capitalize() if event.venue else event.source
    symbol = event.symbol or "?"
    side_word = "LONG" if body.side is PositionSide.LONG else "SHORT"
    icon = "🟥" if body.side is PositionSide.LONG else "🟩"
    fields = [
        AlertField("Side", f"{side_word} liquidated"),
        AlertField("Size", f"{number(body.size)} {base_asset(symbol)}", emphasis=True),
        AlertField("USD", usd(body.notional_usd), emphasis=True),
        AlertField("Price", price(body.price)),
        AlertField("Venue", venue),
        AlertField("Time", when(event.occurred_at)),
    ]
    if body.account:
        fields.append(AlertField("Account", body.account))
    return Alert(
        title=f"{icon} {symbol} {side_word} liquidated on {venue}",
        headline=usd(body.notional_usd),
        fields=tuple(fields),
        tone="long" if body.side is PositionSide.LONG else "short",
        footer=body.note,
        url=event.link,
        link_label=f"{symbol} on {venue}",
        data=_data(event, side=body.side.value),
    )


def render_summary(events: Sequence[Event], *, largest: int = 5, digest: bool = False) -> Alert:
    """Many pending alerts for one chat in one message, so the chat is not flooded and nothing is dropped.

    A backlog merge holds one topic; a quiet-hours digest holds everything that waited through the night.
    """
    topics = sorted({e.topic.value for e in events})
    topic = topics[0] if len(topics) == 1 else "mixed"
    total = sum((e.usd or Decimal(0) for e in events), Decimal(0))
    ranked = sorted(events, key=lambda e: e.usd or Decimal(0), reverse=True)[:largest]
    items = tuple(_summary_line(e) for e in ranked)
    venues = sorted({e.venue.value for e in events if e.venue})
    first = min(e.occurred_at for e in events)
    last = max(e.occurred_at for e in events)
    fields = (
        AlertField("Alerts", str(len(events)), emphasis=True),
        AlertField("Total USD", usd(total), emphasis=True),
        AlertField("Venues", ", ".join(v.capitalize() for v in venues) or "-"),
        AlertField("From", when(first)),
        AlertField("To", when(last)),
    )
    if digest:
        title = f"🌙 Quiet-hours digest: {len(events)} alerts ({', '.join(topics)})"
        why = "Held during this chat's quiet hours."
    else:
        title = f"📊 {len(events)} {topic} alerts merged"
        why = "Merged because this chat's backlog exceeded its send rate."
    return Alert(
        title=title,
        headline=usd(total),
        fields=fields,
        items=items,
        footer=f"{why} Largest {len(items)} shown.",
        data={
            "topic": topic,
            "venue": None,
            "symbol": None,
            "side": None,
            "usd": str(total),
            "key": f"summary:{events[0].key}:{len(events)}",
        },
    )


def _summary_line(event: Event) -> str:
    body = event.body
    venue = event.venue.value.capitalize() if event.venue else event.source
    side = f"{body.side.value} " if isinstance(body, LiquidationBody) else ""
    amount = usd(event.usd) if event.usd is not None else "?"
    return f"{amount} {event.symbol or ''} {side}on {venue} at {event.occurred_at:%H:%M:%S}".replace("  ", " ")


def _data(event: Event, *, side: str | None) -> dict[str, str | None]:
    return {
        "topic": event.topic.value,
        "venue": event.venue.value if event.venue else None,
        "symbol": event.symbol,
        "side": side,
        "usd": str(event.usd) if event.usd is not None else None,
        "key": event.key,
    }


def plain_text(alert: Alert) -> str:
    lines = [f"{alert.title} — {alert.headline}"]
    lines += [f"  {f.name}: {f.value}" for f in alert.fields]
    lines += [f"  • {item}" for item in alert.items]
    if alert.url:
        lines.append(f"  {alert.link_label}: {alert.url}")
    if alert.footer:
        lines.append(f"  ({alert.footer})")
    return "\n".join(lines)
