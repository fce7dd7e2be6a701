"""Cascades: liquidations bunched on one market or across all of them, one message edited as it grows."""

from __future__ import annotations

from datetime import timedelta

from bot.families.registry import Family, register
from bot.render import Alert, AlertField, usd, when
from perpwatch.events import CascadeBody, Event, PositionSide


def _body(event: Event) -> CascadeBody:
    body = event.body
    if not isinstance(body, CascadeBody):  # the registry routes by kind; this only narrows the type
        raise TypeError(f"not a cascade body: {body.kind}")
    return body


def _where(event: Event, body: CascadeBody) -> str:
    if body.scope == "market":
        return "across the market"
    venue = event.venue.value.capitalize() if event.venue else "?"
    return f"{event.symbol or '?'} on {venue}"


def _lasted(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _count(body: CascadeBody, count: int) -> str:
    """At least: some members came from a feed that omits liquidations, so there were more."""
    return f"≥{count}" if body.sampled_venues else str(count)


def render(event: Event) -> Alert:
    body = _body(event)
    where = _where(event, body)
    lasted = _lasted(body.last_at - body.started_at)
    state = "ended" if body.closed else "growing"
    icon = "🏁" if body.closed else "🌊"
    largest_side = "long" if body.largest_side is PositionSide.LONG else "short"
    fields = [
        AlertField("Liquidations", _count(body, body.count), emphasis=True),
        AlertField("Total USD", usd(body.usd), emphasis=True),
        AlertField("Longs", f"{_count(body, body.long_count)} · {usd(body.long_usd)}"),
        AlertField("Shorts", f"{_count(body, body.short_count)} · {usd(body.short_usd)}"),
        AlertField(
            "Largest",
            f"{usd(body.largest_usd)} {body.largest_symbol} {largest_side} on {body.largest_venue.value.capitalize()}",
        ),
        AlertField("Venues", ", ".join(v.value.capitalize() for v in body.venues)),
        AlertField("Started", when(body.started_at)),
        AlertField("Last", when(body.last_at)),
    ]
    footer = None
    if body.sampled_venues:
        sampled = ", ".join(v.value.capitalize() for v in body.sampled_venues)
        footer = f"Counts are floors: {sampled} report only some liquidations."
    longs_lead = body.long_usd >= body.short_usd
    return Alert(
        title=f"{icon} Liquidation cascade {state}: {where}, {lasted}",
        headline=usd(body.usd),
        fields=tuple(fields),
        tone="long" if longs_lead else "short",
        footer=footer,
        url=event.link,
        link_label=where,
        data={
            "topic": event.topic.value,
            "venue": event.venue.value if event.venue else None,
            "symbol": event.symbol,
            "side": None,
            "usd": format(body.usd, "f"),
            "key": event.key,
        },
    )


def summary_line(event: Event) -> str:
    body = _body(event)
    state = "ended" if body.closed else "growing"
    return f"cascade {_where(event, body)}: {_count(body, body.count)} liquidations, {usd(body.usd)} ({state})"


FAMILY = register(Family(kind="cascade", body=CascadeBody, render=render, summary_line=summary_line))
