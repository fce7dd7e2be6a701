"""Buybacks: a chat's daily summary of every programme, and a milestone when a running total passes a step.

Every figure names its source and says whether it was measured at the source or estimated, and a figure
that is a floor says why (a source failing, history shorter than the window, a gap between snapshots).
Where a programme publishes its own running total, it is shown beside ours, both sources named.
"""

from __future__ import annotations

from decimal import Decimal

from bot.families.registry import Family, register
from bot.render import Alert, AlertField, number, price, usd, when
from perpwatch.events import BuybackLine, BuybackMilestoneBody, BuybackSummaryBody, Event


def tokens_text(amount: Decimal | None, symbol: str) -> str:
    if amount is None:
        return "tokens not measured"
    return (
        f"{number(amount.quantize(Decimal(1)) if abs(amount) >= 1000 else amount.quantize(Decimal('0.01')))} {symbol}"
    )


def share_text(share: Decimal | None) -> str | None:
    """A share of total supply: small shares keep their digits (0.0042%), never round to 0%."""
    if share is None:
        return None
    percent = share * 100
    if percent == 0:
        return "0%"
    places = min(12, max(2, 1 - percent.adjusted()))  # two significant digits below 0.1%
    return f"{percent:.{places}f}%"


def figure(line: BuybackLine) -> str:
    """`+12,345 HYPE · $345.6K · avg $27.99 · 0.0012% of supply`."""
    parts = [f"+{tokens_text(line.tokens, line.symbol)}" if line.tokens is not None else tokens_text(None, line.symbol)]
    parts.append(usd(line.usd) if line.usd is not None else "USD not known")
    if line.avg_price is not None:
        parts.append(f"avg ${price(line.avg_price)}")
    share = share_text(line.share_of_supply)
    if share is not None:
        parts.append(f"{share} of supply")
    return " · ".join(parts)


def _basis(line: BuybackLine) -> str:
    return "estimated" if line.basis == "estimated" else "measured"


def _published(line: BuybackLine) -> str | None:
    if line.published_source is None:
        return None
    what = [tokens_text(line.published_tokens, line.symbol)] if line.published_tokens is not None else []
    if line.published_usd is not None:
        what.append(usd(line.published_usd))
    return f"{' · '.join(what) or 'no figure'} ({line.published_source})"


def _line_text(line: BuybackLine) -> str:
    text = f"{line.programme} ({line.symbol}) {line.window}: {figure(line)} [{_basis(line)}; {line.source}]"
    published = _published(line)
    if published is not None:
        text += f"; published total {published}"
    if line.incomplete:
        text += f" ⚠ incomplete: {line.incomplete}"
    return text


def _failing(line: BuybackLine) -> bool:
    return line.incomplete is not None and "source failing" in line.incomplete


def _summary(event: Event) -> BuybackSummaryBody:
    if not isinstance(event.body, BuybackSummaryBody):
        raise TypeError(f"not a buyback summary body: {event.body.kind}")
    return event.body


def _milestone(event: Event) -> BuybackMilestoneBody:
    if not isinstance(event.body, BuybackMilestoneBody):
        raise TypeError(f"not a buyback milestone body: {event.body.kind}")
    return event.body


def _data(event: Event) -> dict[str, str | None]:
    return {
        "topic": event.topic.value,
        "venue": None,
        "symbol": event.symbol,
        "side": None,
        "usd": format(event.usd, "f") if event.usd is not None else None,
        "key": event.key,
    }


def render_summary(event: Event) -> Alert:
    body = _summary(event)
    # The headline adds only measured figures of sources that are up: an estimate of the same token's buying
    # would count it twice, and a failing source's floor would pass for the whole.
    counted = [x for x in body.lines if x.usd is not None and x.basis == "measured" and not _failing(x)]
    total = sum((x.usd for x in counted if x.usd is not None), Decimal(0))
    incomplete = [line.programme for line in body.lines if line.incomplete]
    footer = "Measured: read from the programme's own wallet or account. Estimated: a model's figure (DefiLlama)."
    if incomplete:
        footer = f"Incomplete figures: {', '.join(incomplete)}. " + footer
    return Alert(
        title=f"🔁 Buybacks, 24 h to {body.day} ({body.zone})",
        headline=usd(total),
        fields=(
            AlertField("Programmes", str(len(body.lines))),
            AlertField("USD, measured and up", usd(total), True),
        ),
        items=tuple(_line_text(line) for line in body.lines),
        footer=footer,
        data=_data(event),
    )


def render_milestone(event: Event) -> Alert:
    body = _milestone(event)
    line = body.line
    reached = usd(body.reached) if body.unit == "usd" else tokens_text(body.reached, line.symbol)
    fields = [
        AlertField("Bought", tokens_text(line.total_tokens, line.symbol), emphasis=True),
        AlertField("USD", usd(line.total_usd) if line.total_usd is not None else "not known", emphasis=True),
    ]
    if line.avg_price is not None:
        fields.append(AlertField("Average price", f"${price(line.avg_price)}"))
    share = share_text(line.share_of_supply)
    if share is not None:
        fields.append(AlertField("Share of supply", share))
    if line.tracked_since is not None:
        fields.append(AlertField("Counted since", when(line.tracked_since)))
    fields.append(AlertField("Figure", f"{_basis(line)}; {line.source}"))
    published = _published(line)
    if published is not None:
        fields.append(AlertField("Published total", published))
    return Alert(
        title=f"🏁 {line.programme} buybacks passed {reached}",
        headline=reached,
        fields=tuple(fields),
        footer=f"Incomplete: {line.incomplete}" if line.incomplete else None,
        data=_data(event),
    )


def summary_line(event: Event) -> str:
    body = event.body
    if isinstance(body, BuybackMilestoneBody):
        reached = usd(body.reached) if body.unit == "usd" else tokens_text(body.reached, body.line.symbol)
        return f"{body.line.programme} buybacks passed {reached}"
    summary = _summary(event)
    return f"buyback summary for {summary.day}: {len(summary.lines)} programmes"


SUMMARY = register(
    Family(kind="buyback_summary", body=BuybackSummaryBody, render=render_summary, summary_line=summary_line)
)
MILESTONE = register(
    Family(kind="buyback_milestone", body=BuybackMilestoneBody, render=render_milestone, summary_line=summary_line)
)
