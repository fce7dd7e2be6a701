"""DiscordPlatform driven directly through the real discord.py against FakeDiscord: send returns a reference,
edit patches it, a resend with the same nonce posts once, images ride as attachments, long replies split,
and every failure lands on the delivery contract's errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.commands import Command, Context
from bot.platforms.delivery import MessageGone, MessageRef, PlatformStartError, TransientFailure, Unauthorized
from bot.platforms.discord import DiscordPlatform
from bot.platforms.discord_render import MAX_CONTENT, reply_parts
from bot.render import Alert, AlertField, Image, Reply
from storage.models import Chat
from tests.fakes.discord_api import FakeDiscord

TOKEN = "FAKE.DISCORD.TOKEN"
USER = 1400000000000000042
PNG = b"\x89PNG\r\n\x1a\n chart"
GUARD_S = 10.0
"""Hang guard only: every step here finishes in a fraction of it."""


def chat_of(channel_id: int) -> Chat:
    return Chat(
        id=1,
        platform="discord",
        platform_chat_id=str(channel_id),
        kind="group",
        title="#alerts",
        status="active",
        gone_reason=None,
        quiet_start=None,
        quiet_end=None,
        quiet_tz=None,
    )


def alert(headline: str = "$1.25M", **kw: Any) -> Alert:
    return Alert(title="BTC long liquidated", headline=headline, fields=(AlertField("Venue", "binance"),), **kw)


async def register_chat(platform: str, chat_id: str, kind: str, title: str | None) -> Chat:
    return chat_of(int(chat_id))


def make_context(
    platform: str, chat: Chat, user_id: str, args: dict[str, str], is_admin: Callable[[], Awaitable[bool]]
) -> Context:
    return Context(platform, chat, user_id, args, is_admin, services=cast(Any, None))


async def many_lines(ctx: Context) -> Reply:
    return Reply(lines=tuple(f"line {i:04d}" for i in range(1000)), title="Many")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    try:
        async with FakeDiscord(TOKEN) as server:
            yield server
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


def platform_for(fake: FakeDiscord, **kw: Any) -> DiscordPlatform:
    return DiscordPlatform(
        TOKEN,
        api_url=fake.api_base,
        gateway_url=fake.gateway_url,
        register_chat=register_chat,
        make_context=make_context,
        commands=(Command("many", "a long answer", many_lines),),
        **kw,
    )


@pytest.fixture
async def platform(fake: FakeDiscord) -> AsyncIterator[DiscordPlatform]:
    plat = platform_for(fake, send_timeout_s=1.0)
    async with asyncio.timeout(GUARD_S):
        await plat.start()
    try:
        yield plat
    finally:
        await plat.stop()


@pytest.fixture
def chat(fake: FakeDiscord) -> Chat:
    return chat_of(fake.channel_ids[0])


async def test_alert_send_returns_the_message_and_carries_a_nonce(
    fake: FakeDiscord, platform: DiscordPlatform, chat: Chat
) -> None:
    ref = await platform.send(chat, alert(), nonce="delivery-1")
    [message] = fake.messages
    assert ref == MessageRef((str(message.id),))
    assert message.embeds[0]["description"] == "**$1.25M**"
    stored = fake.stored_message(message.id)
    assert stored is not None and stored["nonce"] and len(stored["nonce"]) <= 25


async def test_resend_with_the_same_nonce_posts_once(fake: FakeDiscord, platform: DiscordPlatform, chat: Chat) -> None:
    """Issue 10.4: a resend of the same delivery (its answer was lost) must not show twice."""
    first = await platform.send(chat, alert(), nonce="delivery-7")
    again = await platform.send(chat, alert(), nonce="delivery-7")
    other = await platform.send(chat, alert(), nonce="delivery-8")
    assert again == first
    assert other != first
    assert len(fake.messages) == 2


async def test_a_send_whose_answer_never_comes_may_have_delivered_and_its_retry_posts_once(
    fake: FakeDiscord, platform: DiscordPlatform, chat: Chat
) -> None:
    fake.fail_next(fake.channel_ids[0], kind="accept_then_hang")
    with pytest.raises(TransientFailure) as raised:
        async with asyncio.timeout(GUARD_S):
            await platform.send(chat, alert(), nonce="delivery-9")
    assert raised.value.maybe_delivered
    assert len(fake.messages) == 1  # Discord took it; only the answer was lost
    ref = await platform.send(chat, alert(), nonce="delivery-9")
    assert ref.primary == str(fake.messages[0].id)
    assert len(fake.messages) == 1


async def test_edit_updates_the_message(fake: FakeDiscord, platform: DiscordPlatform, chat: Chat) -> None:
    ref = await platform.send(chat, alert(), nonce="d")
    assert await platform.edit(chat, ref, alert("$2.50M")) == ref
    [edited] = fake.edits
    assert edited.id == int(ref.primary)
    stored = fake.stored_message(int(ref.primary))
    assert stored is not None and stored["embeds"][0]["description"] == "**$2.50M**"


async def test_edit_of_a_deleted_message_is_message_gone(
    fake: FakeDiscord, platform: DiscordPlatform, chat: Chat
) -> None:
    ref = await platform.send(chat, alert(), nonce="d")
    fake.delete_message(int(ref.primary))
    with pytest.raises(MessageGone):
        await platform.edit(chat, ref, alert("$2.50M"))


async def test_alert_image_is_an_attachment_the_embed_shows(
    fake: FakeDiscord, platform: DiscordPlatform, chat: Chat
) -> None:
    await platform.send(chat, alert(image=Image(PNG, caption="chart", filename="buyback.png")), nonce="d")
    [message] = fake.messages
    [upload] = message.files
    assert (upload.filename, upload.data) == ("buyback.png", PNG)
    assert message.embeds[0]["image"]["url"] == "attachment://buyback.png"


async def test_reply_image_rides_on_the_first_part_and_threads_under_the_command(
    fake: FakeDiscord, platform: DiscordPlatform, chat: Chat
) -> None:
    command = await platform.send(chat, Reply.of("the command"), nonce="c")
    reply = Reply(lines=("see the chart",), image=Image(PNG, caption="", filename="c.png"))
    await platform.send(chat, reply, nonce="r", reply_to=command.primary)
    answer = fake.messages[-1]
    assert [f.data for f in answer.files] == [PNG]
    stored = fake.stored_message(answer.id)
    assert stored is not None and stored["content"] == "see the chart"


async def test_a_5000_line_reply_is_split_within_the_limit_and_loses_no_line(
    fake: FakeDiscord, platform: DiscordPlatform, chat: Chat
) -> None:
    lines = tuple(f"{i:04d} liquidation on *BTC* of $1,000" for i in range(5000))
    ref = await platform.send(chat, Reply(lines=lines, title="All"), nonce="long")
    assert len(ref.ids) == len(fake.messages) > 1
    assert all(len(m.content) <= MAX_CONTENT for m in fake.messages)
    text = "\n".join(m.content for m in fake.messages).replace("\\*", "*")
    assert text.splitlines() == ["**All**", *lines]


async def test_a_revoked_token_is_unauthorized(fake: FakeDiscord, platform: DiscordPlatform, chat: Chat) -> None:
    """Issue 10.7: a 401 while running names the setting instead of retrying forever."""
    fake.token = "REVOKED"
    with pytest.raises(Unauthorized) as raised:
        await platform.send(chat, alert(), nonce="d")
    assert raised.value.setting == "DISCORD_BOT_TOKEN"


async def test_unreachable_api_at_start_is_one_line(fake: FakeDiscord) -> None:
    """Issue 10.6: Discord's API unreachable at start printed a 60-line traceback."""
    platform = DiscordPlatform(
        TOKEN,
        api_url="http://127.0.0.1:9/api/v10",  # nothing listens there
        gateway_url=fake.gateway_url,
        register_chat=register_chat,
        make_context=make_context,
    )
    with pytest.raises(PlatformStartError) as raised:
        async with asyncio.timeout(GUARD_S):
            await platform.start()
    message = str(raised.value)
    assert message.startswith("cannot reach the Discord API at http://127.0.0.1:9/api/v10: ")
    assert "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    await platform.stop()


async def test_a_long_command_answer_is_a_response_and_followups(fake: FakeDiscord, platform: DiscordPlatform) -> None:
    expected = reply_parts(await many_lines(cast(Context, None)))
    await fake.wait_ready()
    iid = await fake.send_interaction("many", user_id=USER)
    reply = await fake.wait_interaction_bodies(iid, len(expected), timeout=GUARD_S)
    assert reply.bodies[0]["type"] == 4  # the first part answers the interaction, the rest follow up
    contents = [body.get("data", body)["content"] for body in reply.bodies]
    assert contents == expected
    assert len(expected) > 1 and all(len(c) <= MAX_CONTENT for c in contents)
