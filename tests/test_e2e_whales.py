"""Whales through the real bot and python-telegram-bot against the loopback Bot API: a chat watches a wallet
and takes its alerts, the wallet is seeded from a loopback `/info`, its trade on the loopback `trades`
stream reaches the chat as one alert, and `/whale` answers with the live account."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from perpwatch.clock import SYSTEM_CLOCK
from tests.conftest import MakeSettings, eventually
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.hyperliquid_info import WHALE, FakeInfo, trades_frame
from tests.fakes.rest import FakeRest
from tests.fakes.telegram_api import FakeTelegramApi
from tests.fakes.venue_ws import FakeVenueStream
from tests.test_e2e_telegram import command, running_bot
from watchers.hyperliquid_whales import HyperliquidWhaleWatcher


@pytest.fixture
async def hyperliquid() -> AsyncIterator[tuple[FakeRest, FakeVenueStream, FakeInfo]]:
    info = FakeInfo()
    async with FakeRest(SYSTEM_CLOCK) as rest, FakeVenueStream({'{"method":"ping"}': '{"channel":"pong"}'}) as ws:
        rest.answer_posts("/info", info)
        yield rest, ws, info


@pytest.mark.engines
async def test_a_watched_wallet_is_seeded_its_trade_alerts_and_whale_answers(
    make_settings: MakeSettings,
    telegram: FakeTelegramApi,
    binance: FakeForceOrderServer,
    hyperliquid: tuple[FakeRest, FakeVenueStream, FakeInfo],
) -> None:
    rest, ws, _ = hyperliquid
    async with running_bot(
        make_settings,
        telegram,
        binance,
        watchers="binance,hyperliquid_whales",
        hyperliquid_ws_url=ws.url,
        hyperliquid_info_url=rest.url("/info"),
    ) as app:
        assert "Watching" in (await command(telegram, f"/watch {WHALE} whale1")).body
        assert "Subscribed" in (await command(telegram, "/subscribe whale scope=watchlist")).body
        whales = app.supervisor.watchers["hyperliquid_whales"]
        assert isinstance(whales, HyperliquidWhaleWatcher)
        await eventually(lambda: WHALE in whales.books and whales.books[WHALE].seeded and bool(ws.received()))
        before = len(telegram.sent)
        await ws.push(trades_frame(900001, "3000", "2"))
        [alert] = (await telegram.wait_for_sent(before + 1))[before:]
        assert "🐋 whale1: ETH LONG increased" in alert.body, alert.body  # the chat's own label
        assert "Wallet: whale1 (0x15f4…cc2a)" in alert.body and "LONG 10 → LONG 12 ETH" in alert.body
        assert "$6.00K" in alert.body
        answer = (await command(telegram, "/whale whale1")).body
        assert f"whale1 ({WHALE})" in answer and "Hyperliquid: account value $13.1K" in answer
        assert "ETH LONG 10 · $30.0K · entry 2,986.3" in answer and "no liquidation price given" in answer
        assert "not a label on this chat's watch list" in (await command(telegram, "/whale nobody")).body
        assert "not a wallet address" in (await command(telegram, "/whale 0x12")).body
