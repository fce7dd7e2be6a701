"""The status page's rendering rules, without a bot: what it may show of an alert, and how it draws."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bot.http.status_page import PlatformFigures, StatusSnapshot, is_public, render
from perpwatch.events import Event, Topic
from storage.models import Backlog
from storage.status import HourBucket, SentAlert
from tests.factories import liquidation
from watchers.base import WatcherHealth, WatcherState

NOW = datetime(2026, 12, 2, 18, 20, tzinfo=UTC)


def snapshot(**kw: object) -> StatusSnapshot:
    values: dict[str, object] = {
        "now": NOW,
        "watchers": [WatcherHealth(name="binance", state=WatcherState.UP, connected_since=NOW, events=3)],
        "unsupported": {"edgex": "no public feed"},
        "platforms": [PlatformFigures("telegram", 5, 1, 0, 2, 3.0, 4, 1, None)],
        "backlog": Backlog(pending=4, scheduled=0, parked=1, oldest_pending_at=NOW - timedelta(seconds=30)),
        "alerts": [],
        "hourly": [],
        "storage_paused": False,
    }
    values.update(kw)
    return StatusSnapshot(**values)  # type: ignore[arg-type]


def alert(event: Event, *audience: tuple[str, str]) -> SentAlert:
    return SentAlert(event=event, sent_at=NOW - timedelta(minutes=1), audience=audience)


def test_an_alert_heard_only_in_private_chats_is_listed_without_what_it_said() -> None:
    private = alert(
        liquidation(key="p", symbol="SOLUSDT", usd="777777"), ("telegram", "private"), ("discord", "private")
    )
    group = alert(liquidation(key="g", symbol="ETHUSDT", usd="55000"), ("telegram", "private"), ("telegram", "group"))
    console = alert(liquidation(key="c", symbol="XRPUSDT", usd="1234"), ("console", "private"))
    assert [is_public(a) for a in (private, group, console)] == [False, True, True]
    page = render(snapshot(alerts=[private, group, console]))
    assert "SOLUSDT" not in page and "777" not in page
    assert "sent to private chats only: not shown" in page
    assert "ETHUSDT" in page and "XRPUSDT" in page
    assert "1 telegram group, 1 telegram private" in page  # counted by platform and kind, never named


def test_a_private_whale_alert_never_shows_the_wallet() -> None:
    wallet = "0x" + "ab" * 20
    whale = Event.model_validate(
        {**liquidation(key="w1").model_dump(), "topic": Topic.WHALE, "subject": wallet, "symbol": "HYPE"}
    )
    page = render(snapshot(alerts=[alert(whale, ("telegram", "private"))]))
    assert wallet not in page and "HYPE" not in page and ">whale<" in page
    shown = render(snapshot(alerts=[alert(whale, ("telegram", "group"))]))
    assert "HYPE" in shown  # the same alert heard in a group is listed with what it said


def test_what_a_watcher_says_of_itself_is_shown_under_it() -> None:
    """Each buyback programme's source state, a host's budget: an operator sees which part is failing."""
    buybacks = WatcherHealth(name="buybacks", state=WatcherState.DEGRADED, note="Buyback programmes")
    buybacks.extra["programme aster"] = "failing (last good 2026-12-02 18:00 UTC): HTTP 500"
    buybacks.extra["budget api.hyperliquid.xyz"] = "12/1200 per 60s"
    page = render(snapshot(watchers=[buybacks]))
    detail = re.search(r'data-watcher="buybacks".*?<tr class="detail">(.*?)</tr>', page, re.S)
    assert detail is not None and "Buyback programmes · budget api.hyperliquid.xyz: 12/1200 per 60s" in detail[1]
    assert "programme aster: failing (last good 2026-12-02 18:00 UTC): HTTP 500" in detail[1]


def test_health_figures_and_text_from_the_outside_are_escaped() -> None:
    down = WatcherHealth(name="okx", state=WatcherState.DOWN, last_error="<script>alert(1)</script>", reconnects=4)
    page = render(snapshot(watchers=[down], storage_paused=True))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert re.search(r'data-watcher="okx".*class="down">down<', page)
    assert 'id="storage-paused"' in page
    assert "edgex: unsupported" in page
    assert "<b>4</b> pending, oldest waiting 30s ago" in page


def test_the_chart_stacks_each_hour_by_venue_and_the_table_sums_them() -> None:
    hour = NOW.replace(minute=0)
    hourly = [
        HourBucket("binance", hour, 3, Decimal(3000)),
        HourBucket("bybit", hour, 1, Decimal(1000)),
        HourBucket("binance", hour - timedelta(hours=5), 2, Decimal(500)),
    ]
    page = render(snapshot(hourly=hourly))
    rects = re.findall(
        r'<rect data-venue="(\w+)" data-hour="(\d\d)" x="\d+" y="(\d+)" width="\d+" height="(\d+)"', page
    )
    assert [(v, h) for v, h, _, _ in rects] == [("binance", "13"), ("binance", "18"), ("bybit", "18")]
    heights = {(v, h): int(height) for v, h, _, height in rects}
    assert abs(heights[("binance", "18")] - 3 * heights[("bybit", "18")]) <= 3  # in proportion to USD
    assert 168 <= heights[("binance", "18")] + heights[("bybit", "18")] <= 170  # the peak hour fills the chart
    assert heights[("binance", "13")] < heights[("bybit", "18")]
    assert re.search(r'data-venue="binance".*<td class=n>5</td><td class=n>\$3.50K</td>', page)
    assert "peak $4.00K/h" in page


def test_empty_and_missing_parts_say_so() -> None:
    page = render(snapshot())
    assert 'id="chart-empty"' in page and 'id="alerts-empty"' in page
    missing = render(snapshot(alerts=None, hourly=None, backlog=None, errors=["storage could not be read (X)"]))
    assert missing.count("Not available (storage could not be read).") == 2
    assert "storage could not be read (X)" in missing
