"""The buyback chart: what one or more programmes bought, cumulatively, day by day, as a PNG for `/buyback`.

Drawn by matplotlib through its object API (`Figure` with an Agg canvas), never `pyplot`, whose global
current-figure state is shared by every thread. Drawing takes long enough to stall every chat if it ran on
the event loop, so `render_chart` draws on a worker thread; matplotlib itself is imported there on first use
too. One drawing at a time (`_DRAWING`): matplotlib promises nothing for concurrent use, and a chart is not
worth a second core.

Two panels share the time axis: cumulative tokens above, cumulative USD below. A programme whose source
gives only USD (DefiLlama's holders revenue) is named in the tokens panel as having no token figures rather
than drawn as a flat zero, and one that gives only tokens (an ERC-20 inflow) likewise in the USD panel.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from perpwatch.buybacks import DayPoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Series = Sequence[tuple[str, Sequence[DayPoint]]]
"""(label, the programme's days oldest first) for each programme drawn."""

SIZE_IN = (8.0, 6.0)
DPI = 100
NO_DATA = "no data yet"

_DRAWING = threading.Lock()


def tokens_known(days: Sequence[DayPoint]) -> bool:
    """Whether a programme's days carry token figures: `DayPoint` has no flag, and a source that gives only USD
    leaves every day's tokens at zero while its USD is not."""
    return any(d.tokens != 0 for d in days) or not any(d.usd != 0 for d in days)


def usd_known(days: Sequence[DayPoint]) -> bool:
    """The same for USD: an ERC-20 inflow carries no price, so such a programme has tokens and no USD."""
    return any(d.usd != 0 for d in days) or not any(d.tokens != 0 for d in days)


def cumulative(values: Sequence[Decimal]) -> list[float]:
    """Running sums, summed exactly and only then made floats for drawing."""
    total = Decimal(0)
    out = []
    for value in values:
        total += value
        out.append(float(total))
    return out


def human(value: float) -> str:
    """An axis label a reader takes in at a glance: 1.2B, 350k, 12."""
    size = abs(value)
    for step, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if size >= step:
            return f"{value / step:.3g}{suffix}"
    return f"{value:.3g}"


def cumulative_figure(series: Series, *, title: str, token_symbol: str) -> Figure:
    """The chart as a matplotlib figure (tests read its lines and texts)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    drawn = [(label, days) for label, days in series if days]
    if not drawn:
        axes = figure.subplots()
        axes.set_axis_off()
        axes.set_title(title)
        axes.text(0.5, 0.5, NO_DATA, ha="center", va="center", fontsize=20, color="0.4", transform=axes.transAxes)
        return figure
    tokens_axes, usd_axes = figure.subplots(2, 1, sharex=True)
    figure.suptitle(title)
    without_tokens, without_usd = [], []
    for label, days in drawn:
        dates = [date.fromisoformat(d.day) for d in days]
        if tokens_known(days):
            tokens_axes.step(dates, cumulative([d.tokens for d in days]), where="post", label=label)
        else:
            without_tokens.append(label)
        if usd_known(days):
            usd_axes.step(dates, cumulative([d.usd for d in days]), where="post", label=label)
        else:
            without_usd.append(label)
    _style(tokens_axes, f"{token_symbol} bought (cumulative)", "no token figures", without_tokens)
    _style(usd_axes, "USD spent (cumulative)", "no USD figures", without_usd)
    formatter = FuncFormatter(lambda value, _pos: human(value))
    for axes in (tokens_axes, usd_axes):
        axes.yaxis.set_major_formatter(formatter)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]  # matplotlib.dates carries no annotations
    usd_axes.xaxis.set_major_locator(locator)
    usd_axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    return figure


def _style(axes: Axes, ylabel: str, missing: str, without: Sequence[str]) -> None:
    """Labels, grid and legend; the programmes left out of this panel for want of its figure are named."""
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    if axes.get_lines():
        axes.legend(loc="upper left", fontsize=9)
    if without:
        axes.text(
            0.99,
            0.04,
            f"{missing}: " + ", ".join(without),
            ha="right",
            va="bottom",
            fontsize=9,
            color="0.35",
            transform=axes.transAxes,
        )


def draw_cumulative(series: Series, *, title: str, token_symbol: str) -> bytes:
    """The chart as PNG bytes. Blocks for as long as matplotlib draws: call it off the loop (`render_chart`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with _DRAWING:
        figure = cumulative_figure(series, title=title, token_symbol=token_symbol)
        FigureCanvasAgg(figure)
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()


async def render_chart(series: Series, *, title: str, token_symbol: str) -> bytes:
    """`draw_cumulative` on a worker thread: the loop goes on serving chats while it draws."""
    return await asyncio.to_thread(draw_cumulative, series, title=title, token_symbol=token_symbol)
