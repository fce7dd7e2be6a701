"""/liqs: what was liquidated in a window, by venue and side, from the stored events."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from bot.commands import values
from bot.commands.base import Context
from bot.families.registry import family_of
from bot.render import Reply, usd
from storage.history import SideTotal

DEFAULT_WINDOW = "1h"
LARGEST_SHOWN = 5


def _span(text: str) -> str:
    return text.strip().lower()


def _venue_line(venue: str, sides: list[SideTotal]) -> str:
    by_side = {t.side: t for t in sides}
    total = sum((t.usd for t in sides), Decimal(0))
    parts = [
        f"{label} {by_side[side].count} · {usd(by_side[side].usd)}"
        for side, label in (("long", "longs"), ("short", "shorts"))
        if side in by_side
    ]
    return f"{venue.capitalize()}: {usd(total)} ({'; '.join(parts)})"


async def liqs(ctx: Context) -> Reply:
    """Totals come from the log, so they cover what the enabled watchers saw and the log still keeps; a
    window longer than the retention is refused rather than answered short."""
    symbol_text = ctx.args.get("symbol")
    window_text = ctx.args.get("window")
    if symbol_text is not None and window_text is None and values.looks_like_window(symbol_text):
        symbol_text, window_text = None, symbol_text  # `/liqs 4h`: a window, not a symbol
    window_text = window_text or DEFAULT_WINDOW
    span = values.window(window_text, longest=timedelta(days=ctx.services.settings.retention_days))
    symbol = values.symbol(symbol_text) if symbol_text is not None else None
    now = ctx.services.clock.now()
    report = await ctx.services.store.history.liquidations(since=now - span, symbol=symbol, largest=LARGEST_SHOWN)
    what = symbol or "all symbols"
    title = f"Liquidations, last {_span(window_text)} ({what})"
    if not report.totals:
        return Reply.of(f"No liquidations stored for {what} in the last {_span(window_text)}.", title=title)
    venues: dict[str, list[SideTotal]] = {}
    for total in report.totals:
        venues.setdefault(total.venue, []).append(total)
    longs = sum((t.usd for t in report.totals if t.side == "long"), Decimal(0))
    shorts = sum((t.usd for t in report.totals if t.side == "short"), Decimal(0))
    lines = [
        f"Total: {usd(report.usd)} in {report.count} liquidations (longs {usd(longs)}, shorts {usd(shorts)})",
        *(
            _venue_line(venue, sides)
            for venue, sides in sorted(venues.items(), key=lambda item: -sum(t.usd for t in item[1]))
        ),
    ]
    if report.largest:
        lines.append("Largest:")
        lines += [f"• {family_of(event).summary_line(event)}" for event in report.largest]
    return Reply(lines=tuple(lines), title=title)
