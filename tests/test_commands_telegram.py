"""Every chat command through the real python-telegram-bot against the loopback Bot API, checking replies
and the rows they change (or, for bad input, do not change).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.app import PerpwatchApp
from bot.commands import COMMANDS
from perpwatch.clock import FrozenClock
from storage.models import Chat, Subscription, Threshold
from tests.conftest import MakeSettings, eventually
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.telegram_api import FakeTelegramApi
from tests.test_e2e_telegram import CHAT, GROUP, USER, command, running_bot, sample_frame, subscribed

pytestmark = pytest.mark.engines

WALLET = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20


async def stored(app: PerpwatchApp, chat_id: int = CHAT) -> Chat:
    """The chat as the repositories have it (the tests check state through them, on either engine)."""
    chat = await app.store.chats.get("telegram", str(chat_id))
    assert chat is not None
    return chat


async def subscriptions(app: PerpwatchApp, chat_id: int = CHAT) -> list[Subscription]:
    return await app.store.chats.subscriptions((await stored(app, chat_id)).id)


async def watchlist(app: PerpwatchApp, chat_id: int = CHAT) -> list[tuple[str, str | None]]:
    return [(w.address, w.label) for w in await app.store.chats.watchlist((await stored(app, chat_id)).id)]


async def thresholds(app: PerpwatchApp, chat_id: int = CHAT) -> list[Threshold]:
    return await app.store.chats.thresholds((await stored(app, chat_id)).id)


async def test_start_and_help_list_every_command(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance):
        assert "perpwatch" in (await command(telegram, "/start")).body
        text = (await command(telegram, "/help")).body
        for cmd in COMMANDS:
            assert f"/{cmd.name}" in text
        # The bot's command menu was set from the same registry.
        assert [c["command"] for c in telegram.commands] == [c.name for c in COMMANDS]


async def test_subscribe_list_unsubscribe(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        reply = await command(telegram, "/subscribe liquidation venue=aster symbol=btc min=250k")
        assert "Subscribed: #1 liquidation venue=aster symbol=BTC min=$250K" in reply.body
        again = await command(telegram, "/subscribe liquidation venue=aster symbol=BTC min=1m")
        assert "Updated: #1" in again.body and "min=$1.00M" in again.body
        assert [(s.topic, s.venue, s.symbol, s.min_usd) for s in await subscriptions(app)] == [
            ("liquidation", "aster", "BTC", Decimal("1000000"))
        ]
        listed = await command(telegram, "/list")
        assert "#1 liquidation venue=aster symbol=BTC min=$1.00M" in listed.body
        assert "Removed 1 subscription." in (await command(telegram, "/unsubscribe liquidation")).body
        assert await subscriptions(app) == []
        watched = await command(telegram, "/subscribe whale scope=watchlist min=100k")
        assert "whale min=$100K scope=watchlist" in watched.body
        bad = await command(telegram, "/subscribe whale scope=everyone")
        assert "scope" in bad.body and "Usage: /subscribe" in bad.body
        assert [(s.topic, s.scope) for s in await subscriptions(app)] == [("whale", "watchlist")]


async def test_watch_label_watchlist_unwatch_and_bad_input(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance, max_watchlist_per_chat=2) as app:
        assert "is not a wallet address" in (await command(telegram, f"/watch {WALLET[2:]}")).body
        assert "is not a wallet address" in (await command(telegram, f"/watch {WALLET[:-1]}")).body
        assert f"Watching {WALLET} as whale1" in (await command(telegram, f"/watch {WALLET} whale1")).body
        assert "already used for" in (await command(telegram, f"/watch {OTHER} whale1")).body
        assert "the limit is 32" in (await command(telegram, f"/watch {OTHER} {'x' * 33}")).body
        assert "is not a label" in (await command(telegram, f"/label {WALLET} bad/label")).body
        assert f"{WALLET} is now labelled big" in (await command(telegram, f"/label {WALLET} big")).body
        assert f"{WALLET} — big" in (await command(telegram, "/watchlist")).body
        assert await watchlist(app) == [(WALLET, "big")]
        assert "Stopped watching big" in (await command(telegram, "/unwatch big")).body
        assert "is not on this chat's watch list" in (await command(telegram, "/unwatch big")).body
        assert await watchlist(app) == []


async def test_a_solana_address_is_watched_as_typed(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    solana = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"  # Pacifica accounts are Solana addresses
    async with running_bot(make_settings, telegram, binance) as app:
        assert f"Watching {solana} as pac" in (await command(telegram, f"/watch {solana} pac")).body
        assert await watchlist(app) == [(solana, "pac")]
        lowered = (await command(telegram, f"/unwatch {solana.lower()}")).body  # case is part of base58
        assert "is neither a wallet address nor a label" in lowered
        assert f"Stopped watching {solana}" in (await command(telegram, f"/unwatch {solana}")).body
        assert await watchlist(app) == []


async def test_watch_list_limit_is_a_setting(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance, max_watchlist_per_chat=1) as app:
        await command(telegram, f"/watch {WALLET}")
        assert "the limit is 1" in (await command(telegram, f"/watch {OTHER}")).body
        assert [address for address, _ in await watchlist(app)] == [WALLET]


async def test_threshold_is_the_chat_floor(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        assert "not an amount" in (await command(telegram, "/threshold liquidation lots")).body
        assert "unknown topic" in (await command(telegram, "/threshold weather 5")).body
        assert await thresholds(app) == []
        assert "below $1.00K are skipped" in (await command(telegram, "/threshold liquidation 1k")).body
        await subscribed(telegram)
        await binance.push(sample_frame())  # $138.74: under the floor
        await binance.push(sample_frame(T=1568014470000, q="1", z="1"))  # $9,910: over it
        sent = await telegram.wait_for_sent(len(telegram.sent) + 1)
        assert "$9.91K" in sent[-1].body
        assert "threshold liquidation ≥ $1.00K" in (await command(telegram, "/list")).body
        assert "No default floor" in (await command(telegram, "/threshold liquidation off")).body
        assert await thresholds(app) == []


async def test_quiet_hours_command_validates_and_stores(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        for text, expected in (
            ("/quiet 25:00-07:00", "'25:00' is not a time"),
            ("/quiet 23:00", "is not a window"),
            ("/quiet 23:00-07:00 Mars/Olympus", "'Mars/Olympus' is not a time zone"),
            ("/quiet 07:00-07:00", "must not start and end"),
        ):
            assert expected in (await command(telegram, text)).body, text
        assert (await stored(app)).quiet_start is None
        reply = await command(telegram, "/quiet 23:00-07:00 Europe/Berlin")
        assert "Quiet hours 23:00-07:00 Europe/Berlin" in reply.body
        chat = await stored(app)
        assert (chat.quiet_start, chat.quiet_end, chat.quiet_tz) == ("23:00", "07:00", "Europe/Berlin")
        assert "quiet hours 23:00-07:00 Europe/Berlin" in (await command(telegram, "/list")).body
        assert "Quiet hours off" in (await command(telegram, "/quiet off")).body
        assert (await stored(app)).quiet_start is None


async def test_quiet_hours_hold_alerts_across_a_restart_and_send_one_digest(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    night = _tomorrow_at_3()
    clock = FrozenClock(night)
    async with running_bot(make_settings, telegram, binance, clock=clock, pacing=False) as app:
        before = await _in_quiet_hours(app, telegram)
        for i in range(3):
            await binance.push(sample_frame(T=1568014460893 + i))
        await _pending(app, 3, quiet_held_at_least=1)
    assert len(telegram.sent) == before
    clock.set_wall(night + timedelta(minutes=30))
    async with running_bot(make_settings, telegram, binance, clock=clock, pacing=False) as app:  # restart at night
        await binance.wait_connected(2)  # the restarted watcher's connection
        await binance.push(sample_frame(T=1568014470000))  # a new alert after the restart waits too
        await eventually(lambda: app.pipeline.stats.accepted == 1)
        app.dispatcher.notify()
        # The new one is read into the outbox now (the restart's sweep) or when the hold ends: either way it
        # waits, and the digest below holds all four.
        assert len(telegram.sent) == before
        clock.set_wall(night.replace(hour=6, minute=1))
        app.dispatcher.notify()
        sent = await telegram.wait_for_sent(before + 1)
        assert "Quiet-hours digest: 4 alerts" in sent[-1].body
        await _pending(app, 0)
    assert len(telegram.sent) == before + 1


def _tomorrow_at_3() -> datetime:
    """A night ahead of the real clock, so rows accepted now are already due by the dispatcher's clock."""
    return (datetime.now(UTC) + timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)


async def _in_quiet_hours(app: PerpwatchApp, telegram: FakeTelegramApi) -> int:
    """Subscribe the chat and set quiet hours 00:00-06:00 UTC (the app's clock stands at night); returns how
    many messages were sent before the quiet part of the test."""
    await subscribed(telegram)
    await command(telegram, "/quiet 00:00-06:00 UTC")
    return len(telegram.sent)


async def _pending(app: PerpwatchApp, n: int, *, quiet_held_at_least: int = 0) -> None:
    import asyncio

    got: tuple[int, int] = (0, 0)
    for _ in range(500):
        chat = await stored(app)
        later = app.clock.now() + timedelta(days=400)  # every row waiting, whatever it waits for
        _, waiting = await app.store.outbox.due_for_chat(chat.id, later, limit=10_000, read=False)
        got = (len(waiting), sum(d.quiet_held for d in waiting))
        if got[0] == n and got[1] >= quiet_held_at_least:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"expected {n} pending deliveries, got {got}")


async def test_status_shows_watchers_and_backlog(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        await binance.push(sample_frame(T=1568014460893 - 2 * 365 * 86_400_000))  # two years before the run
        await eventually(lambda: bool(app.supervisor.watchers["binance"].health.rejected))
        text = (await command(telegram, "/status")).body
        assert "binance: up since" in text
        assert "rejected 1 (too_old 1)" in text
        assert "edgex: unsupported" in text
        assert "Deliveries: 0 pending" in text


async def test_operator_commands_answer_only_configured_ids(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance, admin_ids=f"telegram:{USER}") as app:
        refused = await command(telegram, "/pause binance", chat=777, user=777)
        assert "operator command" in refused.body
        assert "unknown watcher 'bybit'" in (await command(telegram, "/pause bybit")).body
        assert "Watcher binance paused" in (await command(telegram, "/pause binance")).body
        assert "binance: paused" in (await command(telegram, "/status")).body
        assert await app.store.watchers.paused() == {"binance"}
    async with running_bot(make_settings, telegram, binance, admin_ids=str(USER)) as app:
        # Paused survives a restart: the watcher does not connect until resumed.
        assert app.supervisor.watchers["binance"].health.state.value == "paused"
        assert "Watcher binance resumed" in (await command(telegram, "/resume binance")).body
        await binance.wait_connected(2)  # one connection before the pause, one after the resume


async def test_group_member_cannot_change_watch_list_or_quiet_hours(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    telegram.set_member_status(GROUP, 7, "administrator")
    telegram.set_member_status(GROUP, 8, "member")
    async with running_bot(make_settings, telegram, binance) as app:
        await subscribed(telegram, chat=GROUP, user=7, chat_type="supergroup")
        for text in (
            f"/watch {WALLET}",
            "/quiet 23:00-07:00",
            "/threshold liquidation 5",
            "/unsubscribe all",
            f"/label {WALLET} x",
            f"/unwatch {WALLET}",
            "/subscribe whale",
        ):
            reply = await command(telegram, text, chat=GROUP, user=8, chat_type="supergroup")
            assert "Only admins of this group" in reply.body, text
        assert await watchlist(app, GROUP) == []
        assert await thresholds(app, GROUP) == []
        assert [s.topic for s in await subscriptions(app, GROUP)] == ["liquidation"]  # the admin's, intact
        assert (await stored(app, GROUP)).quiet_start is None


async def test_subscribing_to_what_no_watcher_produces_says_so(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        covered = await command(telegram, "/subscribe liquidation venue=binance")
        assert "no enabled watcher" not in covered.body
        uncovered = await command(telegram, "/subscribe liquidation venue=okx")
        assert "no enabled watcher produces liquidation alerts from okx yet" in uncovered.body
        assert "no enabled watcher produces whale alerts yet" in (await command(telegram, "/subscribe whale")).body
        assert len(await subscriptions(app)) == 3  # still stored: a note, not a refusal


async def test_anonymous_group_admin_may_change_settings(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        before = len(telegram.sent)
        telegram.enqueue_message(GROUP, "supergroup", 0, "/subscribe liquidation", title="Desk", as_group=True)
        reply = (await telegram.wait_for_sent(before + 1))[before]
        assert "Subscribed" in reply.body
        assert telegram.requests_for("getChatMember") == []  # posting as the group proves adminship
        assert [s.topic for s in await subscriptions(app, GROUP)] == ["liquidation"]


async def test_quiet_off_sends_everything_held_as_one_digest_now(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    night = _tomorrow_at_3()
    clock = FrozenClock(night)
    async with running_bot(make_settings, telegram, binance, clock=clock, pacing=False) as app:
        before = await _in_quiet_hours(app, telegram)
        await binance.push(sample_frame(T=1568014460893))  # held, and flagged for the digest
        await _pending(app, 1, quiet_held_at_least=1)
        await binance.push(sample_frame(T=1568014460894))  # accepted during the hold: waits for its end
        await eventually(lambda: app.pipeline.stats.accepted == 2)
        await _pending(app, 2, quiet_held_at_least=2)  # read at once, and held for the digest too
        clock.set_wall(night.replace(hour=8))  # morning: the window is over, /quiet off releases the rest
        telegram.enqueue_message(CHAT, "private", USER, "/quiet off")
        app.dispatcher.notify()
        sent = await telegram.wait_for_sent(before + 2)  # the reply and the digest, in either order
        bodies = [m.body for m in sent[before:]]
        assert any("Quiet hours off" in b for b in bodies), bodies
        assert any("Quiet-hours digest: 2 alerts" in b for b in bodies), bodies
        await _pending(app, 0)


async def test_liqs_sums_the_stored_window_and_refuses_bad_windows(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        await binance.push(sample_frame())  # 0.014 BTC long at 9910: $138.74
        await binance.push(sample_frame(T=1568014461893, S="BUY", q="1", z="1", l="1"))  # 1 BTC short: $9,910
        await binance.push(sample_frame(T=1568014462893, s="ETHUSDT"))  # ETH long: $138.74
        await eventually(lambda: app.pipeline.stats.accepted == 3)
        text = (await command(telegram, "/liqs")).body
        assert "Liquidations, last 1h (all symbols)" in text
        assert "Total: $10.2K in 3 liquidations (longs $277.48, shorts $9.91K)" in text
        assert "Binance: $10.2K (longs 2 · $277.48; shorts 1 · $9.91K)" in text
        assert text.index("$9.91K BTCUSDT short") < text.index("$138.74 BTCUSDT long")
        btc = (await command(telegram, "/liqs BTC 4h")).body
        assert "last 4h (BTC)" in btc and "in 2 liquidations" in btc and "ETHUSDT" not in btc
        assert "last 30m (all symbols)" in (await command(telegram, "/liqs 30m")).body
        assert "No liquidations stored for SOL" in (await command(telegram, "/liqs SOL")).body
        too_long = (await command(telegram, "/liqs BTC 31d")).body
        assert "at most 30d" in too_long
        assert "is not a window" in (await command(telegram, "/liqs BTC soon")).body


async def test_distance_sets_the_chats_warning_steps_and_refuses_others(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        assert "Subscribed" in (await command(telegram, "/subscribe whale scope=watchlist")).body
        chat = await stored(app)
        assert "liquidation-distance warnings at 10%, 5%, 2%" in (await command(telegram, "/list")).body
        reply = (await command(telegram, "/distance 3,15%,7.5")).body
        assert "warn this chat at 15%, 7.5%, 3% from their liquidation price." in reply
        assert await app.store.chats.distance_warnings(chat.id) == ["15", "7.5", "3"]
        refused = (await command(telegram, "/distance 4,2")).body
        assert "'4,2' is not a list of steps; choose from 20, 15, 10, 7.5, 5, 3, 2, 1" in refused
        assert await app.store.chats.distance_warnings(chat.id) == ["15", "7.5", "3"]  # nothing changed
        assert "(the default)" in (await command(telegram, "/distance default")).body
        assert await app.store.chats.distance_warnings(chat.id) == ["10", "5", "2"]
