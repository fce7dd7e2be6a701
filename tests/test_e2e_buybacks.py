"""Buybacks through the real bot and python-telegram-bot against loopback sources and the loopback Bot API:
the Assistance Fund is read from a loopback `/info`, what it bought between two snapshots is stored, `/buybacks
HYPE` answers with the totals and a PNG chart, the chat's daily summary arrives at its hour, `/status` shows
each source, and bad or unauthorised `/buybacks add` changes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.app import PerpwatchApp
from tests.conftest import MakeSettings, eventually
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.buyback_sources import Sources
from tests.fakes.telegram_api import FakeTelegramApi
from tests.test_e2e_telegram import USER, command, running_bot
from watchers.buybacks import BuybackWatcher

pytestmark = pytest.mark.engines


def _watcher(app: PerpwatchApp) -> BuybackWatcher:
    watcher = app.supervisor.watchers["buybacks"]
    assert isinstance(watcher, BuybackWatcher)
    return watcher


async def test_the_fund_is_read_stored_and_answered_with_a_chart_and_a_daily_summary(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer, buyback_sources: Sources
) -> None:
    sources = buyback_sources
    async with running_bot(
        make_settings, telegram, binance, watchers="binance,buybacks", admin_ids=[str(USER)], **sources.settings()
    ) as app:
        assert "Subscribed" in (await command(telegram, "/subscribe buyback")).body
        watcher = _watcher(app)
        await eventually(
            lambda: (
                "hyperliquid-af" in watcher.pollers
                and watcher.pollers["hyperliquid-af"].health.last_frame_at is not None
            )
        )
        fund = watcher.pollers["hyperliquid-af"]
        sources.info.total = str(Decimal(sources.info.total) + 1000)
        sources.info.entry_ntl = str(Decimal(sources.info.entry_ntl) + 29000)
        assert await fund.poll_once()
        assert fund.new_buys == 1

        before = len(telegram.sent)
        await command(telegram, "/buybacks HYPE")
        answer = (await telegram.wait_for_sent(before + 1))[before:]  # the photo carries the text as its caption
        photos = [m for m in answer if m.method == "sendPhoto"]
        assert len(photos) == 1 and (photos[0].photo_size_bytes or 0) > 10_000
        text = "\n".join(m.body for m in answer)
        assert "hyperliquid-af (HYPE)" in text and "24h: +1,000 HYPE · $29.0K · avg $29" in text, text
        assert "published total: 47,943,119 HYPE · $1.36B" in text
        assert "counted only since" in text  # 7 d and 30 d: the history is minutes old

        assert "Daily buyback summary at" in (await command(telegram, "/buybacks daily 00:00 UTC")).body
        before = len(telegram.sent)
        await app.buyback_reports.tick()
        [summary] = (await telegram.wait_for_sent(before + 1))[before:]
        assert "Buybacks, 24 h to" in summary.body and "+1,000 HYPE · $29.0K" in summary.body

        status = (await command(telegram, "/status")).body
        assert "programme hyperliquid-af ok, last good" in status and "1 new buys since start" in status, status

        refused = (
            await command(telegram, "/buybacks add mine magic token=coingecko:x symbol=X source=https://x.example")
        ).body
        assert "not added: kind 'magic' is not one of" in refused
        assert await app.store.buybacks.programme("mine") is None
        stranger = (await command(telegram, "/buybacks remove aster", user=777, chat=777)).body
        assert "for operators" in stranger
        assert await app.store.buybacks.programme("aster") is not None
