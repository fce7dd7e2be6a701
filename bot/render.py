"""Neutral rich text that every platform can draw: alerts, command replies, images, and number formats.

Platforms decide only markup: Telegram HTML, a Discord embed, console plain text. What an alert says is
each family's (`bot/families/`); how numbers are rounded for people is decided once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

Tone = Literal["long", "short", "neutral"]


@dataclass(frozen=True)
class AlertField:
    name: str
    value: str
    emphasis: bool = False


@dataclass(frozen=True)
class Image:
    """A PNG drawn off the event loop and stored with its alert, so a retry sends the very same bytes."""

    png: bytes
    caption: str = ""
    filename: str = "chart.png"


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
    image: Image | None = None


@dataclass(frozen=True)
class Reply:
    """A command's answer, platform-neutral: a bold title and plain lines."""

    lines: tuple[str, ...]
    title: str | None = None
    ok: bool = True
    image: Image | None = None

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


def plain_text(alert: Alert) -> str:
    lines = [f"{alert.title} — {alert.headline}"]
    lines += [f"  {f.name}: {f.value}" for f in alert.fields]
    lines += [f"  • {item}" for item in alert.items]
    if alert.url:
        lines.append(f"  {alert.link_label}: {alert.url}")
    if alert.footer:
        lines.append(f"  ({alert.footer})")
    return "\n".join(lines)
