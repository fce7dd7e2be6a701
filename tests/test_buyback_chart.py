"""The buyback chart: a PNG of the cumulative tokens and USD, a readable image when there is nothing yet, a
USD-only or tokens-only programme named instead of drawn as zero, and drawn off the event loop."""

from __future__ import annotations

import asyncio
import struct
import threading
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bot import buyback_chart
from bot.buyback_chart import NO_DATA, cumulative_figure, draw_cumulative, render_chart
from perpwatch.buybacks import DayPoint

PNG = b"\x89PNG\r\n\x1a\n"
START = date(2026, 1, 1)


def days(n: int, tokens: str, usd: str, *, start: date = START) -> list[DayPoint]:
    return [DayPoint((start + timedelta(days=i)).isoformat(), Decimal(tokens), Decimal(usd)) for i in range(n)]


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def ydata(line: Any) -> list[float]:
    return [float(v) for v in line.get_ydata()]


def texts(figure: Any) -> list[str]:
    return [t.get_text() for t in figure.findobj(lambda o: hasattr(o, "get_text") and o.get_text())]


def test_a_chart_of_two_programmes_is_a_png_of_plausible_size() -> None:
    png = draw_cumulative(
        [("Hyperliquid AF", days(120, "45000.5", "1200000")), ("Aster", days(60, "3000000", "2100000"))],
        title="Buybacks",
        token_symbol="HYPE",
    )
    assert png_size(png) == (800, 600)
    assert 10_000 < len(png) < 1_000_000


def test_the_panels_draw_running_sums() -> None:
    figure = cumulative_figure([("AF", days(3, "1.5", "30"))], title="AF", token_symbol="HYPE")
    tokens_axes, usd_axes = figure.axes
    [tokens_line] = tokens_axes.get_lines()
    [usd_line] = usd_axes.get_lines()
    assert ydata(tokens_line) == [1.5, 3.0, 4.5]
    assert ydata(usd_line) == [30.0, 60.0, 90.0]
    assert "HYPE bought (cumulative)" in texts(figure)


def test_a_programme_without_token_figures_is_named_not_drawn_as_zero() -> None:
    series = [("AF", days(5, "2", "60")), ("DefiLlama", days(5, "0", "1000"))]
    figure = cumulative_figure(series, title="HYPE", token_symbol="HYPE")
    tokens_axes, usd_axes = figure.axes
    assert [line.get_label() for line in tokens_axes.get_lines()] == ["AF"]
    assert [line.get_label() for line in usd_axes.get_lines()] == ["AF", "DefiLlama"]
    assert "no token figures: DefiLlama" in texts(figure)
    only_usd = draw_cumulative([("DefiLlama", days(5, "0", "1000"))], title="HYPE", token_symbol="HYPE")
    assert png_size(only_usd) == (800, 600)


def test_a_programme_without_usd_figures_is_named_in_the_usd_panel() -> None:
    series = [("edgeX", days(4, "25000", "0")), ("other", days(4, "1", "2"))]
    figure = cumulative_figure(series, title="EDGE", token_symbol="EDGE")
    tokens_axes, usd_axes = figure.axes
    assert [line.get_label() for line in tokens_axes.get_lines()] == ["edgeX", "other"]
    assert [line.get_label() for line in usd_axes.get_lines()] == ["other"]
    assert "no USD figures: edgeX" in texts(figure) and not any("no token figures" in t for t in texts(figure))


@pytest.mark.parametrize("series", [[], [("AF", [])]], ids=["no programmes", "no days"])
def test_nothing_to_draw_is_a_readable_image(series: list[tuple[str, list[DayPoint]]]) -> None:
    figure = cumulative_figure(series, title="HYPE buybacks", token_symbol="HYPE")
    assert NO_DATA in texts(figure) and "HYPE buybacks" in texts(figure)
    assert not any(axes.get_lines() for axes in figure.axes)
    png = draw_cumulative(series, title="HYPE buybacks", token_symbol="HYPE")
    assert png_size(png) == (800, 600) and len(png) > 2_000


async def test_the_chart_is_drawn_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task that ticks every few milliseconds keeps ticking while a year of two programmes is drawn."""
    drawn_on: list[int] = []

    def draw(*args: Any, **kwargs: Any) -> bytes:
        drawn_on.append(threading.get_ident())
        return draw_cumulative(*args, **kwargs)

    monkeypatch.setattr(buyback_chart, "draw_cumulative", draw)
    ticks = 0
    loop = asyncio.get_running_loop()
    longest_stall = 0.0

    async def tick() -> None:
        nonlocal ticks, longest_stall
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            longest_stall = max(longest_stall, loop.time() - before)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = loop.time()
    series = [("AF", days(365, "40000", "1000000")), ("Aster", days(365, "900000", "700000"))]
    png = await render_chart(series, title="Buybacks", token_symbol="HYPE")
    took = loop.time() - started
    ticker.cancel()
    assert png[:8] == PNG
    assert drawn_on and drawn_on[0] != threading.get_ident()
    assert ticks >= 3 and longest_stall < max(0.1, took / 2), (ticks, longest_stall, took)
