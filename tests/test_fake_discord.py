"""The real discord.py `Client` and `CommandTree` against the loopback FakeDiscord: no mocks, no dpytest.

Everything crosses a socket, so what is checked is discord.py's own handling of the fake's bytes: login,
gateway handshake, command sync, interaction callbacks, 429 retries and error mapping
(shared/research/chat-platforms.md §2.9). If these pass, other tests can trust the fake.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from tests.fakes.discord_api import ADMINISTRATOR, FakeDiscord, FaultKind

TOKEN = "FAKE.DISCORD.TOKEN"
USER_ID = 1400000000000000042
PNG = b"\x89PNG\r\n\x1a\n fake chart bytes"
WAIT_S = 5.0


class AlertBot(discord.Client):
    """Shaped like perpwatch's Discord adapter: slash commands on a tree, and records for the asserts."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)
        self.ready = asyncio.Event()
        self.resumed = asyncio.Event()
        self.calls: list[dict[str, object]] = []
        self.errors: asyncio.Queue[app_commands.AppCommandError] = asyncio.Queue()
        self.seen: asyncio.Queue[discord.Message] = asyncio.Queue()
        self._add_commands()

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_resumed(self) -> None:
        self.resumed.set()

    async def on_message(self, message: discord.Message) -> None:
        await self.seen.put(message)

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(name="alert", description="Watch liquidations on a symbol")
        async def alert(
            interaction: discord.Interaction, symbol: str, min_usd: int, longs: bool = True, ratio: float = 1.0
        ) -> None:
            self.calls.append(
                {
                    "symbol": symbol,
                    "min_usd": min_usd,
                    "longs": longs,
                    "ratio": ratio,
                    "guild_id": interaction.guild_id,
                    "user_id": interaction.user.id,
                }
            )
            await interaction.response.send_message(f"watching {symbol} from ${min_usd} longs={longs} x{ratio}")

        @tree.command(name="status", description="Feed health")
        async def status(interaction: discord.Interaction, mode: str = "followup") -> None:
            await interaction.response.defer(ephemeral=True)
            if mode == "edit":
                await interaction.edit_original_response(content="all feeds up")
            else:
                await interaction.followup.send("all feeds up", ephemeral=True)

        @tree.command(name="config", description="Chat settings (admins)")
        @app_commands.checks.has_permissions(manage_guild=True)
        async def config(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("settings open")

        alerts = app_commands.Group(name="alerts", description="Manage alerts")

        @alerts.command(name="add", description="Add an alert")
        async def add(interaction: discord.Interaction, symbol: str) -> None:
            await interaction.response.send_message(f"added {symbol}")

        tree.add_command(alerts)

        @tree.error
        async def on_tree_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            await self.errors.put(error)
            if isinstance(error, app_commands.CheckFailure):
                await interaction.response.send_message(f"error: {type(error).__name__}", ephemeral=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(TOKEN) as server:
        saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        Route.BASE = server.api_base
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)
        try:
            yield server
        finally:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[AlertBot]:
    client = AlertBot()
    runner: asyncio.Task[None] | None = None
    try:
        await client.login(TOKEN)
        runner = asyncio.create_task(client.connect())
        await asyncio.wait_for(client.ready.wait(), WAIT_S)
        yield client
    finally:
        await client.close()
        if runner is not None:
            await runner


def _text_channel(bot: AlertBot, fake: FakeDiscord) -> discord.TextChannel:
    channel = bot.get_channel(fake.channel_ids[0])
    assert isinstance(channel, discord.TextChannel)
    return channel


def _statuses(fake: FakeDiscord, method: str, path_end: str) -> list[int]:
    return [r.status for r in fake.requests if r.method == method and r.path.endswith(path_end)]


# --- startup and gateway ---------------------------------------------------------------------------


async def test_login_and_gateway_handshake_reach_on_ready(fake: FakeDiscord, bot: AlertBot) -> None:
    assert bot.user is not None and bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    [login] = fake.logins
    assert login.token == TOKEN
    assert login.intents == discord.Intents.default().value
    # discord.py asked for zlib-stream and still read the fake's plain text frames (§2.3).
    assert login.query["compress"] == "zlib-stream"
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None and guild.owner_id == fake.owner_id
    assert _text_channel(bot, fake).name == "alerts"


async def test_bad_token_is_a_login_failure(fake: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.default())
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login("NOT.THE.TOKEN")
    finally:
        await client.close()


async def test_rest_answers_exact_json_content_type_and_401_without_token(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.api_base}/users/@me") as anonymous:
            assert anonymous.status == 401
            assert await anonymous.json() == {"message": "401: Unauthorized", "code": 0}
        headers = {"Authorization": f"Bot {TOKEN}"}
        async with session.get(f"{fake.api_base}/users/@me", headers=headers) as me:
            assert me.headers["Content-Type"] == "application/json"
            assert (await me.json())["id"] == str(fake.bot_user_id)


async def test_dispatch_pushes_any_event_to_the_client(fake: FakeDiscord, bot: AlertBot) -> None:
    author = {"id": str(USER_ID), "username": "alice", "discriminator": "0", "avatar": None}
    await fake.dispatch(
        "MESSAGE_CREATE",
        {
            "id": "1500000000000000009",
            "channel_id": str(fake.channel_ids[0]),
            "guild_id": str(fake.guild_id),
            "type": 0,
            "content": "hello",
            "timestamp": "2025-01-01T00:00:00+00:00",
            "author": author,
            "mentions": [],
            "embeds": [],
            "attachments": [],
        },
    )
    message = await asyncio.wait_for(bot.seen.get(), WAIT_S)
    assert (message.content, message.author.id) == ("hello", USER_ID)


async def test_reconnect_resumes_the_session(fake: FakeDiscord, bot: AlertBot) -> None:
    await fake.send_reconnect()
    await asyncio.wait_for(bot.resumed.wait(), WAIT_S)
    assert fake.resumes == 1
    assert len(fake.logins) == 1, "a resume must not IDENTIFY again"
    iid = await fake.send_interaction("alert", {"symbol": "ETH", "min_usd": 1}, user_id=USER_ID)
    assert (await fake.wait_interaction_response(iid)).content.startswith("watching ETH")


# --- application commands --------------------------------------------------------------------------


async def test_sync_stores_commands_and_keeps_ids(fake: FakeDiscord, bot: AlertBot) -> None:
    first = await bot.tree.sync()
    assert fake.command_puts == 1
    stored = fake.synced_commands()
    assert {c["name"] for c in stored} == {"alert", "status", "config", "alerts"}
    assert {c.id for c in first} == {int(c["id"]) for c in stored}
    assert all(c["application_id"] == str(fake.application_id) for c in stored)
    config = next(c for c in stored if c["name"] == "config")
    assert config["default_member_permissions"] is None

    second = await bot.tree.sync()
    assert fake.command_puts == 2
    assert {c.id for c in second} == {c.id for c in first}
    assert {c.id for c in await bot.tree.fetch_commands()} == {c.id for c in first}


async def test_interaction_reaches_command_with_declared_option_types(fake: FakeDiscord, bot: AlertBot) -> None:
    await bot.tree.sync()
    iid = await fake.send_interaction(
        "alert",
        {"symbol": "BTC", "min_usd": 250_000, "longs": False, "ratio": 2},
        user_id=USER_ID,
    )
    reply = await fake.wait_interaction_response(iid)
    # `ratio` was synced as NUMBER, so Discord (and the fake) send 2.0 although the test typed 2.
    assert bot.calls == [
        {
            "symbol": "BTC",
            "min_usd": 250_000,
            "longs": False,
            "ratio": 2.0,
            "guild_id": fake.guild_id,
            "user_id": USER_ID,
        }
    ]
    assert isinstance(bot.calls[0]["ratio"], float)
    assert (reply.callback_type, reply.content) == (4, "watching BTC from $250000 longs=False x2.0")
    assert not reply.ephemeral


async def test_unsynced_command_gets_python_option_types(fake: FakeDiscord, bot: AlertBot) -> None:
    iid = await fake.send_interaction("alert", {"symbol": "SOL", "min_usd": 5, "ratio": 1.5}, user_id=USER_ID)
    reply = await fake.wait_interaction_response(iid)
    assert reply.content == "watching SOL from $5 longs=True x1.5"


async def test_guild_command_is_routed_by_guild_id(fake: FakeDiscord, bot: AlertBot) -> None:
    guild = discord.Object(fake.guild_id)
    bot.tree.copy_global_to(guild=guild)
    await bot.tree.sync(guild=guild)
    assert fake.command_puts == 1
    assert all(c["guild_id"] == str(fake.guild_id) for c in fake.synced_commands(fake.guild_id))
    assert fake.synced_commands() == []
    iid = await fake.send_interaction("alerts add", {"symbol": "HYPE"}, user_id=USER_ID)
    assert (await fake.wait_interaction_response(iid)).content == "added HYPE"


@pytest.mark.parametrize("mode", ["followup", "edit"])
async def test_deferred_reply_records_the_final_text(fake: FakeDiscord, bot: AlertBot, mode: str) -> None:
    iid = await fake.send_interaction("status", {"mode": mode}, user_id=USER_ID)
    reply = await fake.wait_interaction_response(iid)
    assert (reply.callback_type, reply.content, reply.ephemeral) == (5, "all feeds up", True)
    assert len(reply.bodies) == 2


@pytest.mark.parametrize(
    ("permissions", "user_id", "expected"),
    [
        (ADMINISTRATOR, USER_ID, "settings open"),  # resolved to every bit, as Discord sends it
        (1 << 5, USER_ID, "settings open"),  # MANAGE_GUILD
        (0, 1400000000000000001, "settings open"),  # the guild owner
        (0, USER_ID, "error: MissingPermissions"),
    ],
)
async def test_member_permissions_are_resolved_like_discord(
    fake: FakeDiscord, bot: AlertBot, permissions: int, user_id: int, expected: str
) -> None:
    iid = await fake.send_interaction("config", user_id=user_id, permissions=permissions)
    assert (await fake.wait_interaction_response(iid)).content == expected


async def test_dm_interaction_has_a_user_and_no_guild(fake: FakeDiscord, bot: AlertBot) -> None:
    iid = await fake.send_interaction("alert", {"symbol": "BTC", "min_usd": 1}, user_id=USER_ID, guild=False)
    await fake.wait_interaction_response(iid)
    assert (bot.calls[0]["guild_id"], bot.calls[0]["user_id"]) == (None, USER_ID)


async def test_callback_after_the_deadline_is_an_unknown_interaction(fake: FakeDiscord, bot: AlertBot) -> None:
    fake.interaction_deadline_s = 0.0
    await fake.send_interaction("alert", {"symbol": "BTC", "min_usd": 1}, user_id=USER_ID)
    error = await asyncio.wait_for(bot.errors.get(), WAIT_S)
    assert isinstance(error, app_commands.CommandInvokeError)
    assert isinstance(error.original, discord.NotFound) and error.original.code == 10062


# --- channel messages ------------------------------------------------------------------------------


async def test_channel_send_with_embed_is_recorded_and_echoed(fake: FakeDiscord, bot: AlertBot) -> None:
    embed = discord.Embed(title="BTC long liq", description="$1.2M", color=0xFF0000)
    embed.add_field(name="venue", value="hyperliquid", inline=True)
    sent = await _text_channel(bot, fake).send("liq alert", embed=embed)

    [recorded] = await fake.wait_for_messages(1)
    assert (recorded.id, recorded.channel_id, recorded.content) == (sent.id, fake.channel_ids[0], "liq alert")
    assert recorded.embeds[0]["title"] == "BTC long liq"
    assert recorded.embeds[0]["fields"] == [{"name": "venue", "value": "hyperliquid", "inline": True}]
    assert sent.embeds[0].fields[0].value == "hyperliquid"
    echoed = await asyncio.wait_for(bot.seen.get(), WAIT_S)
    assert echoed.id == sent.id and echoed.author.id == fake.bot_user_id


async def test_image_upload_arrives_as_multipart(fake: FakeDiscord, bot: AlertBot) -> None:
    embed = discord.Embed(title="cascade").set_image(url="attachment://cascade.png")
    sent = await _text_channel(bot, fake).send(embed=embed, file=discord.File(io.BytesIO(PNG), "cascade.png"))
    [recorded] = await fake.wait_for_messages(1)
    assert [(f.filename, f.data) for f in recorded.files] == [("cascade.png", PNG)]
    assert recorded.embeds[0]["image"]["url"] == "attachment://cascade.png"
    assert sent.attachments[0].filename == "cascade.png" and sent.attachments[0].size == len(PNG)


async def test_message_edit_is_recorded(fake: FakeDiscord, bot: AlertBot) -> None:
    sent = await _text_channel(bot, fake).send("BTC cascade $1M")
    await sent.edit(content="BTC cascade $3M")
    [edit] = await fake.wait_for_edits(1)
    assert (edit.id, edit.content) == (sent.id, "BTC cascade $3M")
    assert [m.content for m in fake.messages] == ["BTC cascade $1M"]


async def test_enforce_nonce_returns_the_earlier_message(fake: FakeDiscord, bot: AlertBot) -> None:
    channel = _text_channel(bot, fake)
    first = await channel.send("once", nonce="n-1")
    again = await channel.send("once", nonce="n-1")
    other = await channel.send("twice", nonce="n-2")
    assert again.id == first.id and other.id != first.id
    assert [m.content for m in fake.messages] == ["once", "twice"]
    with pytest.raises(discord.HTTPException, match="25 or fewer"):
        await channel.send("long nonce", nonce="x" * 26)


async def test_accept_then_hang_creates_the_message_and_never_answers(fake: FakeDiscord, bot: AlertBot) -> None:
    fake.fail_next(fake.channel_ids[0], kind="accept_then_hang")
    task = asyncio.create_task(_text_channel(bot, fake).send("taken"))
    [recorded] = await fake.wait_for_messages(1)
    assert recorded.content == "taken" and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_rate_limit_is_retried_then_delivered(fake: FakeDiscord, bot: AlertBot) -> None:
    channel = _text_channel(bot, fake)
    fake.fail_next(channel.id, kind="rate_limited", retry_after=0.01)
    sent = await channel.send("after the 429")
    assert _statuses(fake, "POST", f"/channels/{channel.id}/messages") == [429, 200]
    assert [(m.id, m.content) for m in fake.messages] == [(sent.id, "after the 429")]


@pytest.mark.parametrize(
    ("kind", "error", "status", "code"),
    [
        ("missing_permissions", discord.Forbidden, 403, 50013),
        ("missing_access", discord.Forbidden, 403, 50001),
        ("unknown_channel", discord.NotFound, 404, 10003),
        ("server_error", discord.DiscordServerError, 503, 0),
    ],
)
async def test_scripted_faults_map_to_discord_exceptions(
    fake: FakeDiscord, bot: AlertBot, kind: FaultKind, error: type[discord.HTTPException], status: int, code: int
) -> None:
    channel = _text_channel(bot, fake)
    fake.fail_next(channel.id, kind=kind)
    with pytest.raises(error) as raised:
        await channel.send("never delivered")
    assert (raised.value.status, raised.value.code) == (status, code)
    assert fake.messages == []
    await channel.send("the next one goes through")
    assert [m.content for m in fake.messages] == ["the next one goes through"]


async def test_unknown_channel_id_is_not_found(fake: FakeDiscord, bot: AlertBot) -> None:
    with pytest.raises(discord.NotFound) as raised:
        await bot.get_partial_messageable(1300000000000000999).send("nowhere")
    assert raised.value.code == 10003


async def test_fetch_channel_reads_the_channel_object(fake: FakeDiscord, bot: AlertBot) -> None:
    fetched = await bot.fetch_channel(fake.channel_ids[0])
    assert isinstance(fetched, discord.TextChannel) and fetched.name == "alerts"
    with pytest.raises(discord.NotFound):
        await bot.fetch_channel(1300000000000000999)


async def test_direct_message_is_recorded_on_the_dm_channel(fake: FakeDiscord, bot: AlertBot) -> None:
    dm = await bot.create_dm(discord.Object(USER_ID))
    sent = await dm.send("your BTC alert fired")
    [recorded] = await fake.wait_for_messages(1)
    assert (recorded.id, recorded.channel_id) == (sent.id, dm.id)
    echoed = await asyncio.wait_for(bot.seen.get(), WAIT_S)
    assert echoed.id == sent.id and echoed.guild is None


async def test_message_over_discord_limits_is_invalid_form_body(fake: FakeDiscord, bot: AlertBot) -> None:
    with pytest.raises(discord.HTTPException) as raised:
        await _text_channel(bot, fake).send("x" * 2001)
    assert (raised.value.status, raised.value.code) == (400, 50035)
    assert "content" in raised.value.text


async def test_added_channel_is_in_guild_create(fake: FakeDiscord) -> None:
    cid = fake.add_text_channel("whales")
    client = AlertBot()
    try:
        await client.login(TOKEN)
        runner = asyncio.create_task(client.connect())
        await asyncio.wait_for(client.ready.wait(), WAIT_S)
        channel = client.get_channel(cid)
        assert isinstance(channel, discord.TextChannel) and channel.name == "whales"
    finally:
        await client.close()
    await runner


async def test_close_is_idempotent() -> None:
    server = FakeDiscord()
    await server.start()
    await server.close()
    await server.close()
