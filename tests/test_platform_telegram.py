"""TelegramPlatform driven directly through the real python-telegram-bot against FakeTelegramApi: sends
return references, edits land (or are done, or gone), photos carry captions within the limit, long replies
split without breaking HTML, failures land on the delivery contract's errors, stop is bounded after an
outage, and the command front end answers through the dispatcher's reply sender."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from bot.commands import Access, Command, Context, Param
from bot.platforms.delivery import MessageGone, MessageRef, TransientFailure, Unauthorized
from bot.platforms.telegram import MAX_CAPTION, MAX_TEXT, TelegramPlatform, visible_length
from bot.render import Alert, AlertField, Image, Reply
from perpwatch.clock import FrozenClock
from storage.models import Chat
from tests.conftest import eventually
from tests.fakes.telegram_api import TEST_TOKEN, FakeTelegramApi

# PTB points at its typed methods when `do_api_request` is used; the raw path is deliberate (see `_call`).
pytestmark = pytest.mark.filterwarnings("ignore:Please use 'Bot:telegram.warnings.PTBUserWarning")

GROUP = -1001234567890
USER = 42
PNG = b"\x89PNG\r\n\x1a\n chart bytes"
GUARD_S = 10.0
"""Hang guard only: every step here finishes in a fraction of it."""
_TAG = re.compile(r"<[^>]*>")


def chat_of(chat_id: int, kind: str = "group") -> Chat:
    return Chat(
        id=1,
        platform="telegram",
        platform_chat_id=str(chat_id),
        kind=kind,
        title="G",
        status="active",
        gone_reason=None,
        quiet_start=None,
        quiet_end=None,
        quiet_tz=None,
    )


def alert(headline: str = "$1.25M", **kw: Any) -> Alert:
    return Alert(title="BTC long liquidated", headline=headline, fields=(AlertField("Venue", "binance"),), **kw)


def plain(markup: str) -> str:
    return html.unescape(_TAG.sub("", markup))


class Front:
    """What the app gives the front end: chats, contexts, and the dispatcher's reply queue (recorded)."""

    def __init__(self) -> None:
        self.replies: list[tuple[Chat, Reply, str | None]] = []
        self.ran: list[dict[str, str]] = []
        self.answered = asyncio.Event()

    async def register_chat(self, platform: str, chat_id: str, kind: str, title: str | None) -> Chat:
        return chat_of(int(chat_id), kind)

    def make_context(
        self, platform: str, chat: Chat, user_id: str, args: dict[str, str], is_admin: Callable[[], Awaitable[bool]]
    ) -> Context:
        return Context(platform, chat, user_id, args, is_admin, services=cast(Any, None))

    async def send_reply(self, chat: Chat, reply: Reply, reply_to: str | None) -> None:
        self.replies.append((chat, reply, reply_to))
        self.answered.set()

    async def subscribe(self, ctx: Context) -> Reply:
        self.ran.append(dict(ctx.args))
        return Reply.of(f"subscribed {ctx.args.get('topic', '')}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegramApi]:
    async with FakeTelegramApi(TEST_TOKEN) as api:
        yield api


@pytest.fixture
def front() -> Front:
    return Front()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def platform(fake: FakeTelegramApi, front: Front, clock: FrozenClock) -> AsyncIterator[TelegramPlatform]:
    topic = Param("topic", "what to receive", required=True)
    command = Command("subscribe", "receive a topic", front.subscribe, params=(topic,), access=Access.CHAT_ADMIN)
    plat = TelegramPlatform(
        TEST_TOKEN,
        api_url=fake.base_url,
        register_chat=front.register_chat,
        make_context=front.make_context,
        send_reply=front.send_reply,
        commands=(command,),
        clock=clock,
        poll_timeout_s=1,
        send_timeout_s=0.5,
    )
    async with asyncio.timeout(GUARD_S):
        await plat.start()
    try:
        yield plat
    finally:
        async with asyncio.timeout(GUARD_S):
            await plat.stop()


CHAT = chat_of(GROUP)


# --- send and edit ---------------------------------------------------------------------------------


async def test_alert_send_returns_its_message_id(fake: FakeTelegramApi, platform: TelegramPlatform) -> None:
    ref = await platform.send(CHAT, alert(), nonce="d1")
    [sent] = fake.sent
    assert ref == MessageRef((str(sent.message_id),))
    assert (sent.method, sent.parse_mode) == ("sendMessage", "HTML")
    assert sent.body.startswith("<b>BTC long liquidated</b>\n<b>$1.25M</b>")
    assert sent.params["link_preview_options"] == {"is_disabled": True}


async def test_edit_replaces_the_text(fake: FakeTelegramApi, platform: TelegramPlatform) -> None:
    ref = await platform.send(CHAT, alert(), nonce="d1")
    assert await platform.edit(CHAT, ref, alert("$2.50M")) == ref
    assert "<b>$2.50M</b>" in (fake.stored_text(GROUP, int(ref.primary)) or "")


async def test_an_unchanged_edit_counts_as_done(fake: FakeTelegramApi, platform: TelegramPlatform) -> None:
    ref = await platform.send(CHAT, alert(), nonce="d1")
    assert await platform.edit(CHAT, ref, alert()) == ref  # the fake answers "message is not modified"
    assert [r.method for r in fake.requests_for("editMessageText")] == ["editMessageText"]


async def test_edit_of_a_deleted_message_is_message_gone(fake: FakeTelegramApi, platform: TelegramPlatform) -> None:
    ref = await platform.send(CHAT, alert(), nonce="d1")
    fake.delete_message(GROUP, int(ref.primary))
    with pytest.raises(MessageGone):
        await platform.edit(CHAT, ref, alert("$2.50M"))


# --- images ----------------------------------------------------------------------------------------


async def test_a_photo_carries_the_alert_as_its_caption(fake: FakeTelegramApi, platform: TelegramPlatform) -> None:
    ref = await platform.send(CHAT, alert(image=Image(PNG, caption="chart")), nonce="d1")
    [sent] = fake.sent
    assert (sent.method, sent.photo_size_bytes) == ("sendPhoto", len(PNG))
    assert ref.ids == (str(sent.message_id),)
    assert sent.body.startswith("<b>BTC long liquidated</b>")
    ref = await platform.edit(CHAT, ref, alert("$2.50M", image=Image(PNG, caption="chart")))
    assert "$2.50M" in (fake.stored_text(GROUP, int(ref.primary)) or "")


async def test_text_too_long_for_a_caption_follows_the_photo(fake: FakeTelegramApi, platform: TelegramPlatform) -> None:
    """The caption limit counts visible text: 1,000 `&` escape to 5,000 characters but show as 1,000."""
    fits = Reply.of("&" * 1000)
    await platform.send(CHAT, Reply(lines=fits.lines, image=Image(PNG)), nonce="d1")
    [photo] = fake.sent
    assert photo.method == "sendPhoto" and plain(photo.body) == "&" * 1000

    items = tuple(f"item {i}" for i in range(200))
    long_alert = alert(image=Image(PNG, caption="BTC chart"), items=items)
    ref = await platform.send(CHAT, long_alert, nonce="d2")
    photo, text = fake.sent[1:]
    assert (photo.method, photo.body) == ("sendPhoto", "BTC chart")
    assert text.method == "sendMessage" and "item 199" in text.body
    assert visible_length(photo.body) <= MAX_CAPTION
    assert ref.ids == (str(photo.message_id), str(text.message_id))
    await platform.edit(CHAT, ref, alert("$9M", image=Image(PNG, caption="BTC chart"), items=items))
    assert "$9M" in (fake.stored_text(GROUP, text.message_id) or "")  # the text message is the one edited


# --- long replies ----------------------------------------------------------------------------------


async def test_a_5000_line_reply_is_split_and_no_entity_is_broken(
    fake: FakeTelegramApi, platform: TelegramPlatform
) -> None:
    """Issue 10.9: a reply cut to fit ended inside `&lt;`; now every line arrives whole, in order."""
    lines = (*(f"{i:04d} <BTC> & ETH" for i in range(5000)), "<" * 4000)
    ref = await platform.send(CHAT, Reply(lines=lines, title="All"), nonce="d1", reply_to="7")
    sent = fake.sent
    assert len(ref.ids) == len(sent) > 1
    assert all(visible_length(m.body) <= MAX_TEXT for m in sent)
    assert all(not re.search(r"&[a-z]*$", m.body) for m in sent)
    assert plain("\n".join(m.body for m in sent)).splitlines() == ["All", *lines]
    assert sent[0].params["reply_parameters"] == {"message_id": 7, "allow_sending_without_reply": True}
    assert all("reply_parameters" not in m.params for m in sent[1:])


# --- failures --------------------------------------------------------------------------------------


async def test_a_send_whose_answer_never_comes_may_have_been_delivered(
    fake: FakeTelegramApi, platform: TelegramPlatform
) -> None:
    """Issue 10.4: the answer timed out after Telegram took the message; the retry must be flagged."""
    fake.fail_next("sendMessage", GROUP, kind="accept_then_hang")
    with pytest.raises(TransientFailure) as raised:
        async with asyncio.timeout(GUARD_S):
            await platform.send(CHAT, alert(), nonce="d1")
    assert raised.value.maybe_delivered
    assert len(fake.sent) == 1


async def test_a_refused_connection_was_not_delivered(fake: FakeTelegramApi, front: Front) -> None:
    plat = TelegramPlatform(
        TEST_TOKEN,
        api_url=fake.base_url,
        register_chat=front.register_chat,
        make_context=front.make_context,
        send_reply=front.send_reply,
        commands=(),
    )
    await plat.app.bot.initialize()
    await fake.close()
    with pytest.raises(TransientFailure) as raised:
        await plat.send(CHAT, alert(), nonce="d1")
    assert not raised.value.maybe_delivered
    await plat.app.bot.shutdown()


@pytest.mark.parametrize("image", [None, Image(PNG)], ids=["text", "photo"])
async def test_a_revoked_token_is_unauthorized(
    fake: FakeTelegramApi, platform: TelegramPlatform, image: Image | None
) -> None:
    """Issue 10.7: a 401 mid-run read as "Endpoint 'sendMessage' not found" and was retried forever."""
    fake.revoke_token()
    with pytest.raises(Unauthorized) as raised:
        await platform.send(CHAT, alert(image=image), nonce="d1")
    assert raised.value.setting == "TELEGRAM_BOT_TOKEN"


async def test_stop_is_prompt_after_an_outage(
    fake: FakeTelegramApi, platform: TelegramPlatform, clock: FrozenClock
) -> None:
    """Issue 10.5: after an outage, SIGTERM waited out PTB's polling back-off (23 s after 4 minutes)."""
    fake.outage = True
    for failures in range(1, 8):
        await fake.wait_for_request("getUpdates", n=failures, timeout=GUARD_S)
        await eventually(lambda: clock.sleepers > 0, what="the poller waits on its back-off")
        await clock.advance(30.0)
    await fake.wait_for_request("getUpdates", n=8, timeout=GUARD_S)
    await eventually(lambda: clock.sleepers > 0, what="the poller waits on its back-off")
    async with asyncio.timeout(3.0):  # generous guard; the poller is parked on its longest back-off
        await platform.stop()


# --- the command front end -------------------------------------------------------------------------


async def test_a_command_is_answered_through_the_reply_sender(
    fake: FakeTelegramApi, platform: TelegramPlatform, front: Front
) -> None:
    fake.enqueue_message(USER, "private", USER, "/subscribe liquidation")
    async with asyncio.timeout(GUARD_S):
        await front.answered.wait()
    [(chat, reply, reply_to)] = front.replies
    assert chat.platform_chat_id == str(USER) and reply.lines == ("subscribed liquidation",)
    assert reply_to is not None and int(reply_to) >= 1
    assert not fake.requests_for("sendMessage")  # the dispatcher sends it, paced with the chat's alerts


async def test_an_edited_command_is_not_run_again(
    fake: FakeTelegramApi, platform: TelegramPlatform, front: Front
) -> None:
    """Issue 10.9: editing a command to `/subscribe … symbol=EDITED` created a subscription."""
    fake.enqueue_message(USER, "private", USER, "/subscribe liquidation")
    async with asyncio.timeout(GUARD_S):
        await front.answered.wait()
    polls = len(fake.requests_for("getUpdates"))
    fake.enqueue_edit(USER, "private", USER, 1, "/subscribe EDITED")
    fake.enqueue_message(USER, "private", USER, "/subscribe after")
    await fake.wait_for_request("getUpdates", n=polls + 2, timeout=GUARD_S)
    await eventually(lambda: len(front.ran) >= 2, what="the second command ran")
    assert front.ran == [{"topic": "liquidation"}, {"topic": "after"}]


async def test_a_failed_rights_check_gets_an_answer(
    fake: FakeTelegramApi, platform: TelegramPlatform, front: Front
) -> None:
    """Issue 10.9: when getChatMember failed, a group member's /subscribe got no reply at all."""
    fake.fail_next("getChatMember", GROUP, kind="server_error")
    fake.enqueue_message(GROUP, "supergroup", USER, "/subscribe liquidation")
    async with asyncio.timeout(GUARD_S):
        await front.answered.wait()
    [(_, reply, _)] = front.replies
    assert not reply.ok
    assert "Could not check your admin rights" in reply.plain()
    assert front.ran == []
