"""End to end through the real libraries: a frame on a loopback exchange socket becomes a message at a
loopback Telegram Bot API, with the real aiohttp client, SQLite outbox, dispatcher and python-telegram-bot.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.app import PerpwatchApp
from bot.render import usd
from bot.settings import Settings
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Venue
from storage import Store
from tests.conftest import TG_TOKEN, MakeSettings
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.telegram_api import FakeTelegramApi, SentMessage
from tests.stored import count, deliveries, until_outbox
from watchers.forceorder import parse

pytestmark = pytest.mark.engines

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
USER = 4242
CHAT = 4242  # a private chat's id is the user's id
GROUP = -1001234567890


DOCS_T = 1568014460893
"""The docs sample's trade time; frames are moved to the test run's time, keeping their offsets from it."""
RUN_MS = int(time.time() * 1000)


def sample_frame(**order: Any) -> dict[str, Any]:
    """The docs' forceOrder sample, stamped now (a venue's frames are recent: the watcher refuses a 2019 one)."""
    frame: dict[str, Any] = json.loads((PAYLOADS / "binance_forceOrder_docs.json").read_text())
    frame = copy.deepcopy(frame)
    order["T"] = RUN_MS + (int(order.get("T", DOCS_T)) - DOCS_T)
    frame["o"].update(order)
    frame["E"] = order["T"]
    return frame


@asynccontextmanager
async def running_bot(
    make_settings: MakeSettings,
    telegram: FakeTelegramApi,
    binance: FakeForceOrderServer,
    *,
    clock: Clock = SYSTEM_CLOCK,
    pacing: bool = True,
    **overrides: Any,
) -> AsyncIterator[PerpwatchApp]:
    settings = make_settings(
        telegram_bot_token=TG_TOKEN, telegram_api_url=telegram.base_url, binance_ws_url=binance.url, **overrides
    )
    async with PerpwatchApp(settings, clock=clock, pacing=pacing) as app:
        await binance.wait_connected()
        yield app


async def command(
    telegram: FakeTelegramApi, text: str, *, chat: int = CHAT, user: int = USER, chat_type: str = "private"
) -> SentMessage:
    """Send a command as a user and return the bot's reply."""
    before = len(telegram.sent)
    telegram.enqueue_message(chat, chat_type, user, text, title=None if chat_type == "private" else "Desk")  # type: ignore[arg-type]
    sent = await telegram.wait_for_sent(before + 1)
    return sent[before]


async def subscribed(telegram: FakeTelegramApi, text: str = "/subscribe liquidation", **kw: Any) -> None:
    reply = await command(telegram, text, **kw)
    assert "Subscribed" in reply.body, reply.body


def alerts(telegram: FakeTelegramApi, chat: int = CHAT) -> list[SentMessage]:
    return [m for m in telegram.sent if m.chat_id == chat and "liquidated" in m.body]


async def wait_alerts(telegram: FakeTelegramApi, n: int, chat: int = CHAT) -> list[SentMessage]:
    await telegram.wait_until(lambda: len(alerts(telegram, chat)) >= n)
    return alerts(telegram, chat)


async def test_frame_becomes_html_message_and_replay_sends_nothing(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        await subscribed(telegram)
        await binance.push(sample_frame())
        [message] = await wait_alerts(telegram, 1)
        assert message.parse_mode == "HTML"
        assert message.body.splitlines()[:2] == ["<b>🟥 BTCUSDT LONG liquidated on Binance</b>", "<b>$138.74</b>"]
        for line in (
            '<a href="https://www.binance.com/en/futures/BTCUSDT">BTCUSDT on Binance</a>',
            "Size: <b>0.014 BTC</b>",
            "USD: <b>$138.74</b>",
            "Price: 9,910",
            "Venue: Binance",
            f"Time: {datetime.fromtimestamp(RUN_MS / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC",
        ):
            assert line in message.body
        # The venue sends the same frame again, then a new one: only the new one alerts.
        await binance.push(sample_frame())
        await binance.push(sample_frame(S="BUY", T=1568014461893))
        sent = await wait_alerts(telegram, 2)
        assert "SHORT liquidated" in sent[1].body
        assert app.pipeline.stats.duplicates == 1
        assert len(alerts(telegram)) == 2


async def test_retry_after_delays_then_delivers(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        await subscribed(telegram)
        telegram.fail_next("sendMessage", CHAT, kind="retry_after", retry_after=1)
        await binance.push(sample_frame())
        await wait_alerts(telegram, 1)
        attempts = [r for r in telegram.requests_for("sendMessage") if "liquidated" in str(r.params.get("text"))]
        assert len(attempts) == 2
        assert app.dispatcher.stats.rate_limited == 1
        await until_outbox(app, lambda rows: rows == [("sent", "Telegram flood control; retry after 1s")])


async def test_network_fault_is_retried_with_backoff(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        app.dispatcher.backoff_initial_s = 0.05
        await subscribed(telegram)
        telegram.fail_next("sendMessage", CHAT, kind="disconnect")
        telegram.fail_next("sendMessage", CHAT, kind="server_error")
        await binance.push(sample_frame())
        await wait_alerts(telegram, 1)
        await until_outbox(app, lambda rows: [s for s, _ in rows] == ["sent"])
        assert app.dispatcher.stats.retried == 2


async def test_blocked_chat_is_parked_with_reason_and_gets_nothing_more(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        await subscribed(telegram)
        telegram.fail_next("sendMessage", CHAT, kind="blocked")
        await binance.push(sample_frame())
        await telegram.wait_for_request("sendMessage", 2)
        await until_outbox(app, lambda rows: rows == [("parked", "Telegram: Forbidden: bot was blocked by the user")])
        chat = await app.store.chats.get("telegram", str(CHAT))
        assert chat is not None and chat.status == "gone"
        await binance.push(sample_frame(T=1568014499999))
        await until_outbox(app, lambda rows: len(rows) == 1, after_frames=2)
        assert alerts(telegram) == []


async def test_chat_migration_follows_the_new_id(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    new_id = -1009999999999
    async with running_bot(make_settings, telegram, binance) as app:
        await subscribed(telegram)
        telegram.fail_next("sendMessage", CHAT, kind="migrated", migrate_to=new_id)
        await binance.push(sample_frame())
        [message] = await wait_alerts(telegram, 1, chat=new_id)
        assert "BTCUSDT" in message.body
        chat = await app.store.chats.get("telegram", str(new_id))
        assert chat is not None and chat.status == "active"
        assert [s.topic for s in await app.store.chats.subscriptions(chat.id)] == ["liquidation"]


async def test_dropped_socket_reconnects_and_loses_nothing_resent(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    first, second = sample_frame(), sample_frame(s="ETHUSDT", T=1568014462000)
    async with running_bot(make_settings, telegram, binance) as app:
        await subscribed(telegram)
        await binance.push(first)
        await wait_alerts(telegram, 1)
        binance.replay_on_connect = [first, second]  # the venue re-sends recent frames after a reconnect
        await binance.drop_all()
        sent = await wait_alerts(telegram, 2)
        assert ["BTCUSDT" in sent[0].body, "ETHUSDT" in sent[1].body] == [True, True]
        assert app.supervisor.watchers["binance"].health.reconnects >= 1
        assert app.pipeline.stats.duplicates == 1


async def test_malformed_frames_and_bad_commands_change_nothing(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        for text, expected in (
            ("/subscribe", "missing topic"),
            ("/subscribe weather", "unknown topic 'weather'"),
            ("/subscribe liquidation venue=ftx", "unknown venue 'ftx'"),
            ("/subscribe liquidation min=lots", "'lots' is not an amount"),
            ("/subscribe liquidation colour=red", "unknown option 'colour'"),
            ("/unsubscribe 99", "no subscription #99"),
        ):
            reply = await command(telegram, text)
            assert expected in reply.body, (text, reply.body)
        assert await count(app.store, "subscriptions") == 0
        await subscribed(telegram)
        health = app.supervisor.watchers["binance"].health
        for bad in ("not json", '{"e":"forceOrder","o":{"s":"BTCUSDT"}}', '{"e":"forceOrder","o":{"S":"SIDEWAYS"}}'):
            await binance.push(bad)
        await binance.push(sample_frame())
        await wait_alerts(telegram, 1)
        assert health.parse_errors == 3
        assert await count(app.store, "events") == 1


async def test_only_group_admins_change_subscriptions(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    admin, member = 7, 8
    telegram.set_member_status(GROUP, admin, "administrator")
    telegram.set_member_status(GROUP, member, "member")
    async with running_bot(make_settings, telegram, binance) as app:
        refused = await command(telegram, "/subscribe liquidation", chat=GROUP, user=member, chat_type="supergroup")
        assert "Only admins of this group" in refused.body
        listed = await command(telegram, "/list", chat=GROUP, user=member, chat_type="supergroup")
        assert "No subscriptions" in listed.body
        await subscribed(telegram, "/subscribe liquidation min=100", chat=GROUP, user=admin, chat_type="supergroup")
        chat = await app.store.chats.get("telegram", str(GROUP))
        assert chat is not None
        assert [(s.topic, s.min_usd) for s in await app.store.chats.subscriptions(chat.id)] == [
            ("liquidation", Decimal(100))
        ]


async def test_backlog_beyond_a_minute_of_sending_is_merged_not_dropped(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    admin = 7
    telegram.set_member_status(GROUP, admin, "creator")
    async with running_bot(make_settings, telegram, binance) as app:
        await subscribed(telegram, chat=GROUP, user=admin, chat_type="supergroup")
        frames = [sample_frame(T=1568014460893 + i, q=str(i + 1), z=str(i + 1)) for i in range(30)]
        for frame in frames:  # a group takes 20 a minute; 30 at once is more than a minute's worth
            await binance.push(frame)
        await until_outbox(app, lambda rows: all(s == "sent" for s, _ in rows) and len(rows) == 30, after_frames=30)
        messages = [m for m in telegram.sent if m.chat_id == GROUP][1:]  # [0] answered /subscribe
        merged = [m for m in messages if "alerts in one message" in m.body]
        singles = [m for m in messages if "alerts in one message" not in m.body]
        # The first goes out at once; what piled up behind it goes out merged at the group's next slot.
        assert len(merged) == 1
        count = int(merged[0].body.split("Alerts: <b>")[1].split("<")[0])
        assert count + len(singles) == 30  # every alert is in exactly one message
        assert "• $297K BTCUSDT long on Binance" in merged[0].body  # the largest (the 30th) is listed
        total = sum(
            (Decimal(9910) * q for q in range(31 - count, 31)), Decimal(0)
        )  # the merged ones are the last `count`
        assert f"Total USD: <b>{usd(total)}</b>" in merged[0].body


async def seeded_settings(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer, *frames: dict[str, Any]
) -> Settings:
    """Settings aimed at the fakes, and a database where CHAT follows liquidations and `frames` were accepted
    but never sent: the state a bot leaves when it dies between accepting and sending."""
    settings = make_settings(
        telegram_bot_token=TG_TOKEN, telegram_api_url=telegram.base_url, binance_ws_url=binance.url
    )
    async with Store(settings.database_url) as store:
        chat = await store.chats.upsert("telegram", str(CHAT), kind="private", title=None)
        await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
        for frame in frames:
            await store.outbox.accept(parse(frame, Venue.BINANCE))
    return settings


async def test_restart_resumes_pending_deliveries(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    settings = await seeded_settings(make_settings, telegram, binance, sample_frame())
    binance.replay_on_connect = [sample_frame()]  # and the venue re-sends it on the new connection
    async with PerpwatchApp(settings) as app:
        await binance.wait_connected()
        await wait_alerts(telegram, 1)
        await until_outbox(app, lambda rows: rows == [("sent", None)])
        assert app.pipeline.stats.duplicates == 1
    assert len(alerts(telegram)) == 1


async def test_retry_after_holds_the_whole_chat_and_keeps_order(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        await subscribed(telegram)
        telegram.fail_next("sendMessage", CHAT, kind="retry_after", retry_after=1)
        await binance.push(sample_frame(s="BTCUSDT"))
        await telegram.wait_until(lambda: any("BTCUSDT" in str(r.params.get("text")) for r in telegram.requests))
        await binance.push(sample_frame(s="ETHUSDT", T=1568014470000))  # arrives while the chat is held
        sent = await wait_alerts(telegram, 2)
        assert ["BTCUSDT" in sent[0].body, "ETHUSDT" in sent[1].body] == [True, True]
        alert_calls = [r for r in telegram.requests_for("sendMessage") if "liquidated" in str(r.params.get("text"))]
        assert len(alert_calls) == 3  # the refused one, then both after the wait; nothing sent into the ban
        assert app.dispatcher.stats.rate_limited == 1  # the hold's timing is tested on a frozen clock


@pytest.mark.sqlite_only
async def test_a_sent_alert_the_outbox_cannot_record_is_not_sent_again(
    make_settings: MakeSettings,
    telegram: FakeTelegramApi,
    binance: FakeForceOrderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process holds the database's write lock from the moment the Bot API has the message until
    well after it answered: the delivery cannot be marked sent, but the alert goes out once."""
    async with running_bot(make_settings, telegram, binance) as app:
        await subscribed(telegram)
        telegram.latency_s = 0.2

        def alert_requests() -> list[Any]:
            return [r for r in telegram.requests_for("sendMessage") if "liquidated" in str(r.params.get("text"))]

        await binance.push(sample_frame())
        await telegram.wait_until(lambda: len(alert_requests()) == 1)
        other = sqlite3.connect(app.settings.database_path, isolation_level=None)  # an operator's sqlite3 shell
        other.execute("BEGIN IMMEDIATE")
        async with asyncio.timeout(10):  # a hang guard only
            while app.dispatcher.outage.probes < 2:  # noqa: ASYNC110 - the dispatcher's own counter
                await asyncio.sleep(0.02)  # the record failed, and the storage probe failed after it
        assert await deliveries(app) == [("pending", None)]
        other.execute("COMMIT")
        other.close()
        await until_outbox(app, lambda rows: rows == [("sent", None)])
        telegram.latency_s = 0.0
        assert len(alert_requests()) == 1
        assert len(alerts(telegram)) == 1


@pytest.mark.sqlite_only
async def test_one_storage_outage_pauses_sending_once_however_many_sends_it_caught(
    make_settings: MakeSettings,
    telegram: FakeTelegramApi,
    binance: FakeForceOrderServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three chats' sends are in flight when another process takes the write lock, and it lets go once they
    are done: one pause, ended by the storage probe about a second later, and each alert once."""
    chats = (1001, 1002, 1003)
    async with running_bot(make_settings, telegram, binance) as app:
        for chat in chats:
            await subscribed(telegram, chat=chat, user=chat)
        telegram.latency_s = 0.2
        await binance.push(sample_frame())
        await telegram.wait_until(lambda: len(telegram.requests_for("sendMessage")) >= len(chats) * 2)
        other = sqlite3.connect(app.settings.database_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        async with asyncio.timeout(10):  # a hang guard only
            while app.dispatcher.stats.sent < len(chats):  # noqa: ASYNC110 - the dispatcher's counter
                await asyncio.sleep(0.005)
        other.execute("COMMIT")
        other.close()
        await until_outbox(app, lambda rows: rows == [("sent", None)] * len(chats))
        telegram.latency_s = 0.0
        assert [len(alerts(telegram, chat)) for chat in chats] == [1, 1, 1]
        assert app.dispatcher.stats.storage_faults == 1  # one try failed; the other two sends waited for the pause
    paused = [r for r in caplog.records if r.getMessage().startswith("storage unavailable, sending paused")]
    assert len(paused) == 1, [r.getMessage() for r in paused]


async def test_a_cascade_is_one_message_edited_in_place_as_it_grows(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    """Real frames through the real bot: a chat taking cascades and singles gets its first singles, then one
    cascade message that later liquidations edit, never a message per liquidation once it has opened."""
    since_import = int(time.time() * 1000) - RUN_MS  # frames stamped now: a cascade's window is venue time

    def fresh(i: int) -> dict[str, Any]:
        return sample_frame(T=DOCS_T + since_import + i * 1000)

    async with running_bot(make_settings, telegram, binance, cascade_min_count=3, pacing=False) as app:
        await subscribed(telegram)
        await subscribed(telegram, "/subscribe cascade")
        for i in range(2):
            await binance.push(fresh(i))
        await wait_alerts(telegram, 2)
        await binance.push(fresh(2))  # the third: the cascade opens and carries it

        def cascades() -> list[SentMessage]:
            return [m for m in telegram.sent if "Liquidation cascade" in m.body]

        await telegram.wait_until(lambda: bool(cascades()))
        [opened] = cascades()
        assert "Liquidation cascade growing: BTCUSDT on Binance" in opened.body
        for i in range(3, 6):
            await binance.push(fresh(i))
        await telegram.wait_until(lambda: "≥6" in (telegram.stored_text(CHAT, opened.message_id) or ""))
        assert len(alerts(telegram)) == 2  # the four singles after it opened went into the cascade
        assert [m.method for m in cascades()].count("sendMessage") == 1
        assert "editMessageText" in [m.method for m in cascades()]
        assert "Counts are floors: Binance report only some liquidations." in (
            telegram.stored_text(CHAT, opened.message_id) or ""
        )
        assert app.pipeline.stats.cascade_revisions >= 2
