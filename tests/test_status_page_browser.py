"""The status page in a real browser: Debian's headless Chromium, driven by Playwright, against a running
bot on the loopback fakes (Binance forceOrder and the Telegram Bot API, as in tests/test_e2e_telegram.py).

It checks what an operator sees: the watcher up, the delivery figures, the last alerts with a group's
alert shown and a private chat's hidden, the day's chart by venue; and what nobody may see: the token,
a chat's id, a private chat's alert text.

Only Playwright's driver is used, never a browser it downloads: the browser is `/usr/bin/chromium` from
Debian (`apt-get install chromium`). The test skips, saying so, only when that browser is not installed.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from tests.conftest import TG_TOKEN, MakeSettings
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.telegram_api import FakeTelegramApi
from tests.test_e2e_telegram import CHAT, GROUP, USER, sample_frame, subscribed
from tests.test_http_server import bot_with_http

CHROMIUM = Path("/usr/bin/chromium")
HTTP_TOKEN = "page-token-7Hs2"

MISSING = f"Debian's chromium is not installed ({CHROMIUM}: apt-get install chromium)"
REQUIRED = os.environ.get("PERPWATCH_REQUIRE_BROWSER", "").strip() == "1"
"""CI installs the browser (.ci/run): there a missing one fails the run, as a skipped PostgreSQL run does."""
needs_browser = pytest.mark.skipif(not CHROMIUM.exists() and not REQUIRED, reason=MISSING)

CHROMIUM_ARGS = [
    # As root in a container Chromium's sandbox cannot start; the machine's network is closed, so the
    # browser's own background traffic (updates, sync, safe browsing) is turned off rather than refused.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@needs_browser
async def test_status_page_in_headless_chromium(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    from playwright.async_api import async_playwright

    admin = 777
    telegram.set_member_status(GROUP, admin, "administrator")
    async with bot_with_http(make_settings, telegram, binance, http_token=HTTP_TOKEN) as app:
        assert app.http is not None
        await subscribed(telegram, "/subscribe liquidation symbol=BTC", chat=GROUP, user=admin, chat_type="supergroup")
        await subscribed(telegram, "/subscribe liquidation symbol=SOL", chat=CHAT, user=USER)
        await binance.push(sample_frame())  # BTCUSDT: the group hears it
        await binance.push(sample_frame(s="SOLUSDT", q="3", ap="150.25", T=1568014461893))  # the private chat
        await telegram.wait_until(lambda: sum("liquidated" in m.body for m in telegram.sent) >= 2)
        while not await app.dispatcher.idle():  # noqa: ASYNC110 - shown, and recorded as sent
            await asyncio.sleep(0.01)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                refused = await page.goto(f"{app.http.url}/")
                assert refused is not None and refused.status == 401
                assert "a token is required" in await page.inner_text("body")

                shown = await page.goto(f"{app.http.url}/?token={HTTP_TOKEN}")
                assert shown is not None and shown.status == 200
                assert await page.title() == "perpwatch status"

                watcher = page.locator('#watchers tr[data-watcher="binance"] td')
                assert (await watcher.nth(1).inner_text()) == "up"
                telegram_row = page.locator('#platforms tr[data-platform="telegram"] td')
                figures = [await telegram_row.nth(i).inner_text() for i in range(4)]
                assert figures == ["telegram", "2", "0", "0"]  # platform, sent, parked, expired
                assert re.match(r"Backlog: 0 pending", await page.inner_text("#backlog"))

                rows = page.locator("#alerts tbody tr")
                assert await rows.count() == 2
                texts = [await rows.nth(i).inner_text() for i in range(2)]
                [group_row] = [t for t in texts if "BTCUSDT" in t]
                [private_row] = [t for t in texts if t is not group_row]
                assert "LONG liquidated on Binance" in group_row and "1 telegram group" in group_row
                assert "sent to private chats only: not shown" in private_row and "1 telegram private" in private_row

                bars = page.locator('#chart rect[data-venue="binance"]')
                assert await bars.count() == 1  # both liquidations fell in this hour
                assert "2 liquidations" in (await bars.first.locator("title").text_content() or "")
                venue_row = page.locator('#venues tr[data-venue="binance"] td')
                assert (await venue_row.nth(1).inner_text()) == "2"

                html = await page.content()
                body = await page.inner_text("body")
                for secret in (HTTP_TOKEN, TG_TOKEN):
                    assert secret not in html
                for chat_id in (str(GROUP), str(CHAT)):
                    assert not re.search(rf"(?<![\d-]){re.escape(chat_id)}(?!\d)", html), chat_id
                assert "SOLUSDT" not in html and "SOL" not in body  # the private chat's alert said SOL
            finally:
                await browser.close()
