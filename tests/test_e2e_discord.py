"""End to end through the real discord.py: the whole PerpwatchApp with DISCORD_BOT_TOKEN set, aimed at the
loopback FakeDiscord (REST + gateway) and a loopback Binance socket. Commands arrive as INTERACTION_CREATE
on the gateway and are answered through the interaction callback; alerts leave as channel messages with an
embed; faults are scripted on the fake's channel routes, so discord.py's own status mapping and 429 loop run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.app import PerpwatchApp
from bot.commands import COMMANDS, Access
from bot.commands.values import TOPICS, VENUES
from bot.platforms.discord import INTERNAL_ERROR, STALE_COMMAND, DiscordPlatform
from perpwatch.clock import SYSTEM_CLOCK
from tests.conftest import TG_TOKEN, MakeSettings, eventually
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.discord_api import ADMINISTRATOR, FakeDiscord, FaultKind, InteractionReply, OptionValue
from tests.fakes.hyperliquid_info import WHALE, FakeInfo, trades_frame
from tests.fakes.rest import FakeRest
from tests.fakes.telegram_api import FakeTelegramApi
from tests.fakes.venue_ws import FakeVenueStream
from tests.stored import chats, count, message_refs, settings_snapshot, until_outbox
from watchers.buybacks import BuybackWatcher
from watchers.hyperliquid_whales import HyperliquidWhaleWatcher

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
TOKEN = "FAKE.DISCORD.TOKEN"
MEMBER = 1400000000000000042
OPERATOR = 1400000000000000077
MANAGE_GUILD = discord.Permissions(manage_guild=True).value
PLAIN_MEMBER = discord.Permissions(view_channel=True, send_messages=True, use_application_commands=True).value
ADDRESS = "0x" + "ab" * 20
OTHER_ADDRESS = "0x" + "cd" * 20
RED, GREEN = 0xED4245, 0x57F287
TG_USER = 4242

ADMIN_COMMAND_OPTIONS: dict[str, dict[str, OptionValue]] = {
    "subscribe": {"topic": "liquidation"},
    "unsubscribe": {"target": "all"},
    "watch": {"address": OTHER_ADDRESS},
    "unwatch": {"target": ADDRESS},
    "label": {"address": ADDRESS, "label": "renamed"},
    "threshold": {"topic": "liquidation", "min": "100k"},
    "quiet": {"window": "22:00-07:00"},
    "distance": {"steps": "10,5,2"},
    "leads": {"leads": "24h"},
}
"""A valid invocation of every command that changes a chat's settings."""


from tests.fakes.buyback_sources import Sources  # noqa: E402
from tests.test_e2e_telegram import RUN_MS, sample_frame  # noqa: E402 - one docs frame, stamped now, for both platforms

pytestmark = pytest.mark.engines

RUN_TIME = f"{datetime.fromtimestamp(RUN_MS / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC"


@pytest.fixture
async def discord_api() -> AsyncIterator[FakeDiscord]:
    """The platform sets discord.py's process-global endpoints at start; put them back after each test."""
    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    try:
        async with FakeDiscord(TOKEN) as fake:
            yield fake
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


def discord_settings(make_settings: MakeSettings, fake: FakeDiscord, binance: FakeForceOrderServer, **kw: Any) -> Any:
    return make_settings(
        discord_bot_token=kw.pop("token", TOKEN),
        discord_api_url=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        binance_ws_url=binance.url,
        **kw,
    )


@asynccontextmanager
async def running_bot(
    make_settings: MakeSettings, fake: FakeDiscord, binance: FakeForceOrderServer, **overrides: Any
) -> AsyncIterator[PerpwatchApp]:
    async with PerpwatchApp(discord_settings(make_settings, fake, binance, **overrides)) as app:
        await binance.wait_connected()
        yield app


async def slash(
    fake: FakeDiscord,
    name: str,
    options: Mapping[str, OptionValue] | None = None,
    *,
    user: int = MEMBER,
    permissions: int = MANAGE_GUILD,
    guild: bool = True,
    channel: int | None = None,
) -> InteractionReply:
    """Run a slash command as a server member (with Manage Server unless told otherwise); return the answer."""
    iid = await fake.send_interaction(
        name, options, user_id=user, permissions=permissions, guild=guild, channel_id=channel
    )
    return await fake.wait_interaction_response(iid)


def text(reply: InteractionReply) -> str:
    """The reply as a reader sees it: markdown escapes removed."""
    return reply.content.replace("\\", "")


async def channel_chat(app: PerpwatchApp, fake: FakeDiscord, channel: int | None = None) -> Any:
    chat = await app.store.chats.get("discord", str(channel or fake.channel_ids[0]))
    assert chat is not None
    return chat


async def subscribed(fake: FakeDiscord, **options: OptionValue) -> None:
    reply = await slash(fake, "subscribe", {"topic": "liquidation", **options})
    assert text(reply).startswith("Subscribed"), reply.content


def message_statuses(fake: FakeDiscord, channel: int) -> list[int]:
    return [r.status for r in fake.requests if r.method == "POST" and r.path.endswith(f"/channels/{channel}/messages")]


# --- alerts ----------------------------------------------------------------------------------------


async def test_frame_becomes_embed_coloured_by_side(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance) as app:
        await subscribed(fake)
        await binance.push(sample_frame())
        [message] = await fake.wait_for_messages(1)
        assert (message.channel_id, message.content) == (fake.channel_ids[0], "")
        [embed] = message.embeds
        assert embed["title"] == "🟥 BTCUSDT LONG liquidated on Binance"
        assert embed["description"] == "**$138.74**"
        assert embed["color"] == RED
        assert embed["fields"] == [
            {"name": "Side", "value": "LONG liquidated", "inline": True},
            {"name": "Size", "value": "**0.014 BTC**", "inline": True},
            {"name": "USD", "value": "**$138.74**", "inline": True},
            {"name": "Price", "value": "9,910", "inline": True},
            {"name": "Venue", "value": "Binance", "inline": True},
            {
                "name": "Time",
                "value": f"{datetime.fromtimestamp(RUN_MS / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC",
                "inline": True,
            },
            {
                "name": "Link",
                "value": "[BTCUSDT on Binance](https://www.binance.com/en/futures/BTCUSDT)",
                "inline": False,
            },
        ]
        assert embed["url"] == "https://www.binance.com/en/futures/BTCUSDT"  # the title links there too
        await binance.push(sample_frame(S="BUY", T=1568014461893))
        second = (await fake.wait_for_messages(2))[1]
        assert second.embeds[0]["color"] == GREEN
        assert second.embeds[0]["title"] == "🟩 BTCUSDT SHORT liquidated on Binance"
        await until_outbox(app, lambda rows: [s for s, _ in rows] == ["sent", "sent"], after_frames=2)
        assert await message_refs(app) == [str(m.id) for m in fake.messages]


# --- commands, one by one --------------------------------------------------------------------------


async def test_start_help_and_status(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance):
        start = await slash(fake, "start", permissions=PLAIN_MEMBER)
        assert text(start).splitlines()[0] == "**perpwatch**"
        assert "Try /subscribe liquidation min=100k" in text(start)
        assert not start.ephemeral and start.callback_type == 4

        first = await slash(fake, "help", permissions=PLAIN_MEMBER)
        answer = await fake.wait_interaction_bodies(first.interaction_id, 2)  # the list is past 2,000 characters
        parts = [str((b.get("data") or b).get("content") or "") for b in answer.bodies]
        help_lines = "\n".join(parts).replace("\\", "").splitlines()
        assert help_lines[0] == "**Commands**"
        assert [line.split()[0] for line in help_lines[1:]] == [f"/{c.name}" for c in COMMANDS]

        status = text(await slash(fake, "status", permissions=PLAIN_MEMBER)).splitlines()
        assert status[0] == "**Status**"
        assert status[1].startswith("binance: up since ")
        assert status[-1].startswith("Deliveries: 0 pending, 0 parked; 0 sent")


async def test_liqs_answers_the_window_from_stored_events(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance) as app:
        await binance.push(sample_frame())
        await binance.push(sample_frame(T=1568014461893, S="BUY"))
        await eventually(lambda: app.pipeline.stats.accepted == 2)
        answer = text(await slash(fake, "liqs", {"symbol": "BTC", "window": "2h"}, permissions=PLAIN_MEMBER))
        assert answer.splitlines()[0] == "**Liquidations, last 2h (BTC)**"
        assert "Binance: $277.48 (longs 1 · $138.74; shorts 1 · $138.74)" in answer
        refused = await slash(fake, "liqs", {"window": "1y"}, permissions=PLAIN_MEMBER)
        assert "'1y' is not a window" in text(refused)


async def test_subscribe_list_unsubscribe(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance) as app:
        # `min` is a NUMBER option: Discord sends 1500000.0, the handler gets "1500000" as Telegram would.
        reply = await slash(
            fake, "subscribe", {"topic": "liquidation", "venue": "binance", "symbol": "btc", "min": 1_500_000}
        )
        assert (
            text(reply) == "Subscribed: #1 liquidation venue=binance symbol=BTC min=$1.50M\nSee everything with /list."
        )
        chat = await channel_chat(app, fake)
        assert (chat.kind, chat.title) == ("group", "perpwatch test #alerts")
        subs = await app.store.chats.subscriptions(chat.id)
        assert [(s.topic, s.venue, s.symbol, s.min_usd) for s in subs] == [
            ("liquidation", "binance", "BTC", Decimal(1_500_000))
        ]

        listed = text(await slash(fake, "list", permissions=PLAIN_MEMBER))
        assert listed == "**This chat's alerts**\n#1 liquidation venue=binance symbol=BTC min=$1.50M"

        assert text(await slash(fake, "unsubscribe", {"target": "1"})) == "Removed 1 subscription."
        assert await app.store.chats.subscriptions(chat.id) == []
        assert "No subscriptions" in text(await slash(fake, "list"))


async def test_watch_label_watchlist_unwatch(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance) as app:
        assert text(await slash(fake, "watch", {"address": ADDRESS, "label": "whale"})) == (
            f"Watching {ADDRESS} as whale."
        )
        chat = await channel_chat(app, fake)
        assert [(e.address, e.label) for e in await app.store.chats.watchlist(chat.id)] == [(ADDRESS, "whale")]

        assert text(await slash(fake, "label", {"address": ADDRESS, "label": "bigfish"})) == (
            f"{ADDRESS} is now labelled bigfish."
        )
        assert [e.label for e in await app.store.chats.watchlist(chat.id)] == ["bigfish"]

        listed = text(await slash(fake, "watchlist", permissions=PLAIN_MEMBER))
        assert listed == f"**Watch list**\n{ADDRESS} — bigfish"

        assert text(await slash(fake, "unwatch", {"target": "bigfish"})) == "Stopped watching bigfish."
        assert await app.store.chats.watchlist(chat.id) == []


async def test_threshold_and_quiet_hours(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance) as app:
        reply = text(await slash(fake, "threshold", {"topic": "liquidation", "min": "100k"}))
        assert reply.startswith("liquidation alerts below $100K are skipped here")
        chat = await channel_chat(app, fake)
        assert [(t.topic, t.min_usd) for t in await app.store.chats.thresholds(chat.id)] == [
            ("liquidation", Decimal(100_000))
        ]
        off = text(await slash(fake, "threshold", {"topic": "liquidation", "min": "off"}))
        assert off == "No default floor for liquidation any more."
        assert await app.store.chats.thresholds(chat.id) == []

        quiet = text(await slash(fake, "quiet", {"window": "22:00-07:00", "timezone": "Europe/Berlin"}))
        assert quiet.startswith("Quiet hours ")
        chat = await channel_chat(app, fake)
        assert (chat.quiet_start, chat.quiet_end, chat.quiet_tz) == ("22:00", "07:00", "Europe/Berlin")
        assert text(await slash(fake, "quiet", {"window": "off"})).startswith("Quiet hours off")
        chat = await channel_chat(app, fake)
        assert (chat.quiet_start, chat.quiet_end, chat.quiet_tz) == (None, None, None)


async def test_operator_commands_answer_only_admin_ids(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance, admin_ids=f"discord:{OPERATOR}") as app:
        await slash(fake, "list")  # registers the channel, so the snapshot below compares like with like
        before = await settings_snapshot(app)
        for name in ("pause", "resume"):
            # Server admin rights do not make an operator.
            refused = await slash(fake, name, {"watcher": "binance"}, permissions=ADMINISTRATOR)
            assert text(refused) == f"/{name} is an operator command: only ids in PERPWATCH_ADMIN_IDS may use it."
            assert refused.ephemeral
        assert await settings_snapshot(app) == before

        paused = await slash(fake, "pause", {"watcher": "binance"}, user=OPERATOR, permissions=0)
        assert text(paused).startswith("Watcher binance paused")
        assert await app.store.watchers.paused() == {"binance"}
        # An operator may do it from a DM with the bot too.
        resumed = await slash(fake, "resume", {"watcher": "binance"}, user=OPERATOR, guild=False)
        assert text(resumed) == "Watcher binance resumed."
        assert await app.store.watchers.paused() == set()


async def test_buybacks_answers_with_the_totals_and_the_chart_attached(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer, buyback_sources: Sources
) -> None:
    sources = buyback_sources
    async with running_bot(
        make_settings, discord_api, binance, watchers="binance,buybacks", **sources.settings()
    ) as app:
        assert text(await slash(discord_api, "subscribe", {"topic": "buyback"})).startswith("Subscribed")
        watcher = app.supervisor.watchers["buybacks"]
        assert isinstance(watcher, BuybackWatcher)
        await eventually(
            lambda: (
                "hyperliquid-af" in watcher.pollers
                and watcher.pollers["hyperliquid-af"].new_buys == 0
                and watcher.pollers["hyperliquid-af"].health.last_frame_at is not None
            )
        )
        sources.info.total = str(Decimal(sources.info.total) + 500)
        sources.info.entry_ntl = str(Decimal(sources.info.entry_ntl) + 15000)
        assert await watcher.pollers["hyperliquid-af"].poll_once()
        answer = await slash(discord_api, "buybacks", {"what": "hyperliquid-af"}, permissions=0)
        assert "24h: +500 HYPE · $15.0K · avg $30 · 0.000050% of supply" in text(answer), answer.content
        [chart] = answer.attachments
        assert chart["filename"] == "buybacks.png" and int(chart["size"]) > 10_000
        every = await slash(discord_api, "buybacks", {"what": "every", "arg": "hyperliquid-af", "value": "$1M"})
        assert text(every) == "A milestone alert each time hyperliquid-af passes another $1.00M."
        refused = await slash(discord_api, "buybacks", {"what": "every", "arg": "all", "value": "$5M"}, permissions=0)
        assert "only admins of this chat can change /buybacks every" in text(refused)


async def test_every_command_is_exercised_here() -> None:
    """Pins the list above: a new command needs its own e2e test in this file."""
    covered = {"start", "help", "status", "subscribe", "list", "unsubscribe", "watch", "label", "watchlist"}
    covered |= {"unwatch", "threshold", "quiet", "pause", "resume", "liqs", "whale", "distance", "buybacks"}
    covered |= {"upcoming", "leads", "calendar"}  # tests/test_calendar_chat.py drives them on Discord
    assert {c.name for c in COMMANDS} == covered
    assert set(ADMIN_COMMAND_OPTIONS) == {c.name for c in COMMANDS if c.access is Access.CHAT_ADMIN}


# --- bad input and access ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("subscribe", {"topic": "weather"}, "unknown topic 'weather'; expected one of liquidation"),
        ("subscribe", {"topic": "liquidation", "venue": "ftx"}, "unknown venue 'ftx'; expected one of"),
        ("subscribe", {"topic": "liquidation", "min": -5}, "'-5' is not an amount"),
        ("subscribe", {"topic": "liquidation", "symbol": "BTC USDT"}, "'BTC USDT' is not a symbol"),
        ("threshold", {"topic": "liquidation", "min": "lots"}, "'lots' is not an amount"),
        ("watch", {"address": "0x1234"}, "'0x1234' is not a wallet address"),
        ("watch", {"address": OTHER_ADDRESS, "label": "x" * 40}, "label is 40 characters; the limit is 32"),
        ("watch", {"address": OTHER_ADDRESS, "label": "whale"}, "the label 'whale' is already used for " + ADDRESS),
        ("label", {"address": OTHER_ADDRESS, "label": "other"}, f"{OTHER_ADDRESS} is not on this chat's watch list"),
        ("quiet", {"window": "22:00-07:00", "timezone": "Mars/Olympus"}, "'Mars/Olympus' is not a time zone"),
        ("quiet", {"window": "late"}, "'late' is not a window"),
        ("unsubscribe", {"target": "99"}, "this chat has no subscription #99"),
        ("unwatch", {"target": "nobody"}, "'nobody' is not on this chat's watch list"),
        ("pause", {"watcher": "okx"}, "unknown watcher 'okx'; running: binance"),
    ],
)
async def test_bad_input_is_answered_and_changes_nothing(
    make_settings: MakeSettings,
    discord_api: FakeDiscord,
    binance: FakeForceOrderServer,
    name: str,
    options: dict[str, OptionValue],
    expected: str,
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance, admin_ids=str(MEMBER)) as app:
        await subscribed(fake)
        await slash(fake, "watch", {"address": ADDRESS, "label": "whale"})
        before = await settings_snapshot(app)
        reply = await slash(fake, name, options)
        assert expected in text(reply), reply.content
        assert reply.ephemeral
        assert await settings_snapshot(app) == before


async def test_member_without_manage_server_is_refused_everywhere(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance) as app:
        await subscribed(fake)
        await slash(fake, "watch", {"address": ADDRESS, "label": "whale"})
        before = await settings_snapshot(app)
        for name, options in ADMIN_COMMAND_OPTIONS.items():
            reply = await slash(fake, name, options, permissions=PLAIN_MEMBER)
            assert text(reply) == (
                f"Only admins of this server (Manage Server or Administrator) can change its alerts; "
                f"/{name} changed nothing."
            ), name
            assert reply.ephemeral, name
        assert await settings_snapshot(app) == before
        # Reading is for everyone.
        assert text(await slash(fake, "list", permissions=PLAIN_MEMBER)).startswith("**This chat's alerts**\n#1")


@pytest.mark.parametrize("permissions", [MANAGE_GUILD, ADMINISTRATOR], ids=["manage_server", "administrator"])
async def test_server_managers_may_change_settings(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer, permissions: int
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance) as app:
        reply = await slash(fake, "subscribe", {"topic": "liquidation"}, permissions=permissions)
        assert text(reply).startswith("Subscribed: #1 liquidation")
        chat = await channel_chat(app, fake)
        assert [s.topic for s in await app.store.chats.subscriptions(chat.id)] == ["liquidation"]


async def test_direct_message_is_a_private_chat_anyone_may_configure(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance) as app:
        reply = await slash(fake, "subscribe", {"topic": "liquidation"}, guild=False, permissions=0)
        assert text(reply).startswith("Subscribed")
        assert await chats(app) == [("discord", "private", None)]
        await binance.push(sample_frame())
        [message] = await fake.wait_for_messages(1)
        assert message.channel_id not in fake.channel_ids  # the DM channel, reached without a cache hit


async def test_unknown_command_gets_an_explanation(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance):
        reply = await slash(fake, "retired")
        assert (reply.content, reply.ephemeral) == (STALE_COMMAND, True)
        assert reply.content != INTERNAL_ERROR


async def test_slow_command_is_deferred_then_answered(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance) as app:
        [platform] = [p for p in app.platforms if isinstance(p, DiscordPlatform)]
        platform.defer_after_s = 0  # every command now counts as slow
        reply = await slash(fake, "subscribe", {"topic": "liquidation"})
        assert reply.callback_type == 5
        assert text(reply).startswith("Subscribed: #1 liquidation")
        assert len(reply.bodies) == 2  # the defer, then the followup with the answer


# --- command sync --------------------------------------------------------------------------------------


def command_gets(fake: FakeDiscord) -> int:
    path = f"/api/v10/applications/{fake.application_id}/commands"
    return sum(1 for r in fake.requests if r.method == "GET" and r.path == path)


async def test_commands_sync_once_and_not_again_on_restart(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_bot(make_settings, fake, binance):
        assert fake.command_puts == 1
    synced = {c["name"]: c for c in fake.synced_commands()}
    assert list(synced) == [c.name for c in COMMANDS]
    assert synced["subscribe"]["description"] == "receive a topic, optionally filtered"
    options = {o["name"]: o for o in synced["subscribe"]["options"]}
    assert [o["name"] for o in synced["subscribe"]["options"]] == ["topic", "venue", "symbol", "min", "scope"]
    assert options["topic"]["type"] == 3 and options["topic"]["required"] is True
    assert [c["value"] for c in options["topic"]["choices"]] == list(TOPICS)
    assert options["topic"]["description"] == "what to receive"
    assert [c["value"] for c in options["venue"]["choices"]] == list(VENUES) != []
    assert options["min"]["type"] == 10 and options["min"]["required"] is False
    assert options["symbol"]["type"] == 3 and "choices" not in options["symbol"]
    threshold = {o["name"]: o for o in synced["threshold"]["options"]}
    assert threshold["min"]["type"] == 3  # "100k or off" is text, not a number

    async with running_bot(make_settings, fake, binance):
        assert command_gets(fake) == 2
        assert fake.command_puts == 1, "a restart with the same commands must not overwrite them"
        reply = await slash(fake, "subscribe", {"topic": "liquidation", "min": 250_000})
        assert text(reply).startswith("Subscribed: #1 liquidation min=$250K")


async def test_changed_commands_are_synced(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    stale = [{"name": "start", "description": "an older wording", "type": 1, "options": []}]
    url = f"{fake.api_base}/applications/{fake.application_id}/commands"
    async with (
        aiohttp.ClientSession() as http,
        http.put(url, json=stale, headers={"Authorization": f"Bot {TOKEN}"}) as response,
    ):
        assert response.status == 200
    assert fake.command_puts == 1
    async with running_bot(make_settings, fake, binance):
        assert fake.command_puts == 2
        assert [c["name"] for c in fake.synced_commands()] == [c.name for c in COMMANDS]


async def test_bad_token_fails_start_without_showing_it(
    make_settings: MakeSettings,
    discord_api: FakeDiscord,
    binance: FakeForceOrderServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "NOT.THE.RIGHT.TOKEN"
    caplog.set_level(logging.DEBUG)
    app = PerpwatchApp(discord_settings(make_settings, discord_api, binance, token=secret))
    with pytest.raises(RuntimeError, match="DISCORD_BOT_TOKEN") as raised:
        await app.start()
    assert secret not in str(raised.value)
    assert secret not in caplog.text
    assert discord_api.logins == []


# --- delivery faults --------------------------------------------------------------------------------------


async def test_short_429_waits_and_delivers(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    channel = fake.channel_ids[0]
    async with running_bot(make_settings, fake, binance) as app:
        await subscribed(fake)
        fake.fail_next(channel, kind="rate_limited", retry_after=0.05)
        await binance.push(sample_frame())
        [message] = await fake.wait_for_messages(1)
        assert message.embeds[0]["title"].startswith("🟥 BTCUSDT")
        assert message_statuses(fake, channel) == [429, 200]
        await until_outbox(app, lambda rows: [s for s, _ in rows] == ["sent"])


async def test_long_429_holds_the_chat_in_the_outbox(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    """Past discord.py's 30 s inline limit the wait becomes RetryLater: the row waits durably, not a task."""
    fake = discord_api
    channel = fake.channel_ids[0]
    async with running_bot(make_settings, fake, binance) as app:
        await subscribed(fake)
        fake.fail_next(channel, kind="rate_limited", retry_after=45.0)
        await binance.push(sample_frame())
        await until_outbox(app, lambda rows: rows == [("pending", "Discord rate limit; retry after 45s")])
        assert app.dispatcher.stats.rate_limited == 1
        assert message_statuses(fake, channel) == [429]
        assert fake.messages == []


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing_permissions", "Discord 403/50013: Missing Permissions"),
        ("missing_access", "Discord 403/50001: Missing Access"),
        ("unknown_channel", "Discord 404/10003: Unknown Channel"),
    ],
)
async def test_unreachable_channel_is_parked_with_the_reason(
    make_settings: MakeSettings,
    discord_api: FakeDiscord,
    binance: FakeForceOrderServer,
    caplog: pytest.LogCaptureFixture,
    kind: FaultKind,
    reason: str,
) -> None:
    fake = discord_api
    channel = fake.channel_ids[0]
    caplog.set_level(logging.WARNING, logger="bot.dispatcher")
    async with running_bot(make_settings, fake, binance) as app:
        await subscribed(fake)
        fake.fail_next(channel, kind=kind)
        await binance.push(sample_frame())
        await until_outbox(app, lambda rows: rows == [("parked", reason)])
        chat = await channel_chat(app, fake)
        assert (chat.status, chat.gone_reason) == ("gone", reason)
        await binance.push(sample_frame(T=1568014499999))
        await until_outbox(app, lambda rows: len(rows) == 1, after_frames=2)
        assert fake.messages == []
        assert message_statuses(fake, channel) == [403 if kind != "unknown_channel" else 404]
    told = [r for r in caplog.records if r.getMessage().startswith("chat unreachable")]
    assert len(told) == 1 and reason in told[0].getMessage()


async def test_server_error_is_retried_then_delivered(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    channel = fake.channel_ids[0]
    async with running_bot(make_settings, fake, binance) as app:
        app.dispatcher.backoff_initial_s = 0.05
        await subscribed(fake)
        fake.fail_next(channel, kind="server_error")
        await binance.push(sample_frame())
        await fake.wait_for_messages(1)
        assert message_statuses(fake, channel) == [503, 200]
        await until_outbox(app, lambda rows: [s for s, _ in rows] == ["sent"])
        assert app.dispatcher.stats.retried == 1


# --- both platforms --------------------------------------------------------------------------------------


async def test_telegram_and_discord_run_from_one_process_and_one_database(
    make_settings: MakeSettings,
    discord_api: FakeDiscord,
    telegram: FakeTelegramApi,
    binance: FakeForceOrderServer,
) -> None:
    fake = discord_api
    settings = discord_settings(
        make_settings, fake, binance, telegram_bot_token=TG_TOKEN, telegram_api_url=telegram.base_url
    )
    async with PerpwatchApp(settings) as app:
        await binance.wait_connected()
        assert [p.name for p in app.platforms] == ["telegram", "discord"]
        telegram.enqueue_message(TG_USER, "private", TG_USER, "/subscribe liquidation")
        [tg_reply] = await telegram.wait_for_sent(1)
        assert tg_reply.text is not None and "Subscribed" in tg_reply.text
        await subscribed(fake)

        await binance.push(sample_frame())
        [message] = await fake.wait_for_messages(1)
        assert message.embeds[0]["title"] == "🟥 BTCUSDT LONG liquidated on Binance"
        sent = await telegram.wait_for_sent(2)
        assert sent[1].text is not None and "BTCUSDT LONG liquidated" in sent[1].text

        assert [(platform, kind) for platform, kind, _ in await chats(app)] == [
            ("discord", "group"),
            ("telegram", "private"),
        ]
        await until_outbox(app, lambda rows: [s for s, _ in rows] == ["sent", "sent"])
        assert await count(app.store, "events") == 1


async def test_unreachable_gateway_fails_start_and_stop_is_idempotent(discord_api: FakeDiscord) -> None:
    async def register_chat(*_: object) -> Any:
        raise AssertionError("no command can arrive without a gateway")

    def make_context(*_: object) -> Any:
        raise AssertionError("no command can arrive without a gateway")

    platform = DiscordPlatform(
        TOKEN,
        api_url=discord_api.api_base,
        gateway_url="ws://127.0.0.1:9/",  # nothing listens there
        register_chat=register_chat,
        make_context=make_context,
        ready_timeout_s=0.3,
    )
    with pytest.raises(RuntimeError, match=r"gateway at ws://127\.0\.0\.1:9/ did not start a session") as raised:
        await platform.start()
    # The connection error itself, or the hang guard if discord.py ever keeps retrying instead of giving up.
    assert "Connect call failed" in str(raised.value) or "no READY within" in str(raised.value)
    assert discord_api.command_puts == 1  # login and sync happened; only the gateway was missing
    await platform.stop()
    await platform.stop()


async def test_a_watched_wallets_trade_and_whale_on_discord(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with (
        FakeRest(SYSTEM_CLOCK) as rest,
        FakeVenueStream({'{"method":"ping"}': '{"channel":"pong"}'}) as ws,
    ):
        rest.answer_posts("/info", FakeInfo())
        async with running_bot(
            make_settings,
            fake,
            binance,
            watchers="binance,hyperliquid_whales",
            hyperliquid_ws_url=ws.url,
            hyperliquid_info_url=rest.url("/info"),
        ) as app:
            assert "Watching" in text(await slash(fake, "watch", {"address": WHALE, "label": "whale1"}))
            assert "Subscribed" in text(await slash(fake, "subscribe", {"topic": "whale", "scope": "watchlist"}))
            whales = app.supervisor.watchers["hyperliquid_whales"]
            assert isinstance(whales, HyperliquidWhaleWatcher)
            await eventually(lambda: WHALE in whales.books and whales.books[WHALE].seeded and bool(ws.received()))
            await ws.push(trades_frame(900001, "3000", "2"))
            [message] = await fake.wait_for_messages(1)
            [embed] = message.embeds
            assert embed["title"] == "🐋 whale1: ETH LONG increased"  # the chat's own label
            assert embed["url"] == f"https://app.hyperliquid.xyz/explorer/address/{WHALE}"
            answer = text(await slash(fake, "whale", {"target": "whale1"}, permissions=PLAIN_MEMBER))
            assert "ETH LONG 10 · $30.0K · entry 2,986.3" in answer and "account value $13.1K" in answer
