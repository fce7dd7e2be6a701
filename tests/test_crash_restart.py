"""A real bot process (`python -m bot run`, settings by environment) killed with SIGKILL mid-send, then started
again: what each platform shows afterwards is what README.md promises ("When one duplicate can still happen").

- Killed before the Bot API accepted the message: the alert is shown exactly once after the restart.
- Killed after the platform accepted the message and before its answer arrived: Telegram has no idempotency
  key, so the resend shows the alert a second time (once, never more); Discord's nonce with `enforce_nonce`
  makes the resend return the message already posted, so the channel shows it once.

Each killed process ran at DEBUG with the CLI's own logging, and its log must not hold the token. (The restart
runs in-process, where the CLI's redacting handler is not installed, so only the killed process's log counts.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.app import PerpwatchApp
from bot.settings import Settings
from storage import Store
from tests.conftest import TG_TOKEN, MakeSettings, eventually
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import FakeTelegramApi
from tests.stored import deliveries, message_refs, until_outbox
from tests.test_e2e_telegram import CHAT, alerts, sample_frame, seeded_settings, wait_alerts

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[1]
DISCORD_TOKEN = "FAKE.DISCORD.TOKEN"
HANG_GUARD_S = 30.0
"""Only bounds a wait that would otherwise hang; nothing here depends on how long a step takes."""


@pytest.fixture
async def discord_api() -> AsyncIterator[FakeDiscord]:
    """The restarted app sets discord.py's process-global endpoints; put them back after the test."""
    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    try:
        async with FakeDiscord(DISCORD_TOKEN) as fake:
            yield fake
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


async def run_until_killed(
    settings: Settings,
    platform_env: Mapping[str, str],
    binance: FakeForceOrderServer,
    log_path: Path,
    *,
    in_flight: Callable[[], Awaitable[object]],
) -> str:
    """Start the bot as an operator would, push one frame, SIGKILL it once `in_flight()` returns; return its log.

    `in_flight` waits on the platform fake's own record of the send, so the kill lands while it is unanswered.
    """
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "PERPWATCH_DATABASE_URL": settings.database_url,
        "PERPWATCH_WATCHERS": "binance",
        "PERPWATCH_BINANCE_WS_URL": binance.url,
        "PERPWATCH_LOG_LEVEL": "DEBUG",
        **platform_env,
    }
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=log_path.parent, env=env, stdout=log_file, stderr=log_file
        )
        try:
            await binance.wait_connected(timeout_s=HANG_GUARD_S)
            await binance.push(sample_frame())
            await in_flight()
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL  # it died of the kill, not of something before it
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    logged = await asyncio.to_thread(log_path.read_text, encoding="utf-8", errors="replace")
    assert "perpwatch started" in logged  # the log was really captured
    return logged


async def one_pending_delivery(settings: Settings) -> None:
    """What the killed process left: the event accepted, its delivery pending, nothing recorded as sent."""
    async with Store(settings.database_url) as store:
        backlog = await store.outbox.backlog()
        assert (backlog.pending, backlog.parked) == (1, 0)


def telegram_env(telegram: FakeTelegramApi) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": TG_TOKEN, "PERPWATCH_TELEGRAM_API_URL": telegram.base_url}


def liquidation_sends(telegram: FakeTelegramApi) -> int:
    return sum("liquidated" in str(r.params.get("text")) for r in telegram.requests_for("sendMessage"))


async def test_killed_before_accept_delivers_exactly_once_after_restart(
    make_settings: MakeSettings,
    telegram: FakeTelegramApi,
    binance: FakeForceOrderServer,
    tmp_path: Path,
) -> None:
    settings = await seeded_settings(make_settings, telegram, binance)
    telegram.latency_s = 30.0  # the request has arrived but the message is not taken yet when the process dies
    logged = await run_until_killed(
        settings,
        telegram_env(telegram),
        binance,
        tmp_path / "bot.log",
        in_flight=lambda: telegram.wait_until(lambda: liquidation_sends(telegram) == 1, timeout=HANG_GUARD_S),
    )
    assert alerts(telegram) == []
    await one_pending_delivery(settings)

    telegram.latency_s = 0.0
    binance.replay_on_connect = [sample_frame()]  # the venue re-sends the frame to the new process, too
    async with PerpwatchApp(settings) as app:
        await binance.wait_connected(2, timeout_s=HANG_GUARD_S)  # the restarted app's connection
        [message] = await wait_alerts(telegram, 1)
        assert "BTCUSDT LONG liquidated" in message.body
        await eventually(lambda: app.pipeline.stats.duplicates == 1, what="the re-sent frame was recognised")
        await until_outbox(app, lambda rows: rows == [("sent", None)])
    assert len(alerts(telegram)) == 1

    assert "TEST-TOKEN" not in logged and TG_TOKEN not in logged


async def test_telegram_killed_after_accept_shows_the_alert_once_more_and_no_more(
    make_settings: MakeSettings,
    telegram: FakeTelegramApi,
    binance: FakeForceOrderServer,
    tmp_path: Path,
) -> None:
    """README: with no idempotency key, one alert can be shown twice when the process dies after the Bot API
    accepted the message and before its answer reached us. Exactly twice: the pending delivery is resent once,
    the frame the venue replays is recognised, and nothing else goes out."""
    settings = await seeded_settings(make_settings, telegram, binance)
    telegram.fail_next("sendMessage", CHAT, kind="accept_then_hang")  # taken (shown), never answered
    logged = await run_until_killed(
        settings,
        telegram_env(telegram),
        binance,
        tmp_path / "bot.log",
        in_flight=lambda: telegram.wait_until(lambda: len(alerts(telegram)) == 1, timeout=HANG_GUARD_S),
    )
    [shown] = alerts(telegram)
    assert "BTCUSDT LONG liquidated" in shown.body
    await one_pending_delivery(settings)  # the answer never came, so the outbox could not record the send

    binance.replay_on_connect = [sample_frame()]
    async with PerpwatchApp(settings) as app:
        await binance.wait_connected(2, timeout_s=HANG_GUARD_S)  # the restarted app's connection
        await wait_alerts(telegram, 2)
        await eventually(lambda: app.pipeline.stats.duplicates == 1, what="the re-sent frame was recognised")
        await until_outbox(app, lambda rows: rows == [("sent", None)])
        backlog = await app.store.outbox.backlog()
        assert (backlog.pending, backlog.parked) == (0, 0)
    first, again = alerts(telegram)
    assert again.body == first.body and again.message_id != first.message_id  # the one duplicate
    assert [m.body for m in telegram.sent] == [first.body, first.body]  # nothing else was sent, let alone twice
    assert liquidation_sends(telegram) == 2  # the killed send and one resend: no blind retry on top

    assert "TEST-TOKEN" not in logged and TG_TOKEN not in logged


async def test_discord_killed_after_accept_shows_the_alert_once(
    make_settings: MakeSettings,
    discord_api: FakeDiscord,
    binance: FakeForceOrderServer,
    tmp_path: Path,
) -> None:
    """README: Discord messages carry a nonce per delivery with `enforce_nonce`, so the resend after a kill
    between Discord's commit and its answer returns the message already posted instead of posting again."""
    fake = discord_api
    channel = fake.channel_ids[0]
    settings = make_settings(
        discord_bot_token=DISCORD_TOKEN,
        discord_api_url=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        binance_ws_url=binance.url,
    )
    async with Store(settings.database_url) as store:
        chat = await store.chats.upsert("discord", str(channel), kind="group", title="perpwatch test #alerts")
        await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)

    fake.fail_next(channel, kind="accept_then_hang")  # the message is created, the answer never leaves
    logged = await run_until_killed(
        settings,
        {
            "DISCORD_BOT_TOKEN": DISCORD_TOKEN,
            "PERPWATCH_DISCORD_API_URL": fake.api_base,
            "PERPWATCH_DISCORD_GATEWAY_URL": fake.gateway_url,
        },
        binance,
        tmp_path / "bot.log",
        in_flight=lambda: fake.wait_for_messages(1, timeout=HANG_GUARD_S),
    )
    [posted] = fake.messages
    assert posted.embeds[0]["title"] == "🟥 BTCUSDT LONG liquidated on Binance"
    await one_pending_delivery(settings)

    binance.replay_on_connect = [sample_frame()]
    async with PerpwatchApp(settings) as app:
        await binance.wait_connected(2, timeout_s=HANG_GUARD_S)  # the restarted app's connection
        await until_outbox(app, lambda rows: [status for status, _ in rows] == ["sent"], timeout_s=HANG_GUARD_S)
        await eventually(lambda: app.pipeline.stats.duplicates == 1, what="the re-sent frame was recognised")
        # The restarted bot did post again (the hung post is recorded only when the fake closes) ...
        posts = [r.status for r in fake.requests if r.method == "POST" and r.path.endswith(f"/{channel}/messages")]
        assert posts == [200]
        refs = await message_refs(app)
        assert refs == [str(posted.id)]  # ... and Discord answered with the first message
        assert await deliveries(app) == [("sent", None)]
    assert fake.messages == [posted]  # the channel shows the alert once

    assert DISCORD_TOKEN not in logged and "DISCORD.TOKEN" not in logged
