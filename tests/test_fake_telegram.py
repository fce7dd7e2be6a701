"""The Telegram fake against the real python-telegram-bot client: no mocks, bytes cross a socket.

If PTB accepts these answers and maps these errors, adapter tests built on the fake exercise the
same code paths they would against api.telegram.org.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllChatAdministrators,
    ChatMember,
    ChatMemberAdministrator,
    ChatMemberBanned,
    ChatMemberLeft,
    ChatMemberMember,
    ChatMemberOwner,
    Message,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import ApplicationBuilder, CommandHandler, ContextTypes

from tests.fakes.telegram_api import FakeTelegramApi, FaultKind, MemberStatus, SentTimeoutError

TOKEN = "123456:TEST-TOKEN"
GROUP = -1001234567890
USER = 42


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegramApi]:
    async with FakeTelegramApi(token=TOKEN) as api:
        yield api


@pytest.fixture
async def bot(fake: FakeTelegramApi) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=fake.api_base_url, base_file_url=fake.file_base_url) as client:
        yield client


async def raw_call(
    fake: FakeTelegramApi,
    path: str,
    *,
    form: dict[str, str] | None = None,
    json_body: dict[str, object] | None = None,
) -> tuple[int, dict[str, object]]:
    """One request without PTB, to check wire details PTB would hide."""
    url = f"{fake.base_url}{path}"
    async with aiohttp.ClientSession() as session, session.post(url, data=form, json=json_body) as resp:
        body = await resp.json()
        assert isinstance(body, dict)
        return resp.status, body


async def test_initialize_calls_get_me_with_username(fake: FakeTelegramApi, bot: Bot) -> None:
    assert bot.username == "perpwatch_bot"
    assert bot.id == 123456
    assert [r.method for r in fake.requests] == ["getMe"]


async def test_send_message_html_is_recorded_verbatim(fake: FakeTelegramApi, bot: Bot) -> None:
    text = "<b>BTC</b> long liquidated: $1,250,000 &amp; rising 🔥"
    message = await bot.send_message(GROUP, text, parse_mode=ParseMode.HTML)

    [sent] = await fake.wait_for_sent(1)
    assert (sent.method, sent.chat_id, sent.text, sent.parse_mode) == ("sendMessage", GROUP, text, "HTML")
    assert sent.message_id == message.message_id
    assert message.chat.type == "supergroup"
    assert message.from_user is not None and message.from_user.username == "perpwatch_bot"
    second = await bot.send_message(GROUP, "again")
    assert second.message_id == message.message_id + 1


async def test_json_typed_params_are_decoded_and_text_is_not(fake: FakeTelegramApi, bot: Bot) -> None:
    await bot.send_message(GROUP, "123", reply_parameters={"message_id": 5})  # type: ignore[arg-type]
    [sent] = fake.sent
    assert sent.text == "123"
    assert sent.params["reply_parameters"] == {"message_id": 5}


async def test_edit_message_text_and_its_real_errors(fake: FakeTelegramApi, bot: Bot) -> None:
    original = await bot.send_message(USER, "v1")
    edited = await bot.edit_message_text("v2", chat_id=USER, message_id=original.message_id)
    assert isinstance(edited, Message) and edited.edit_date is not None
    assert [m.text for m in fake.sent] == ["v1", "v2"]
    assert fake.sent[1].method == "editMessageText"

    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("v2", chat_id=USER, message_id=original.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("v3", chat_id=USER, message_id=999)


async def test_send_photo_records_size_and_caption(fake: FakeTelegramApi, bot: Bot) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(1000)
    message = await bot.send_photo(GROUP, photo=png, caption="<i>chart</i>", parse_mode=ParseMode.HTML)

    [sent] = fake.sent
    assert (sent.method, sent.text, sent.photo_size_bytes) == ("sendPhoto", "<i>chart</i>", len(png))
    assert message.photo and message.photo[-1].file_size == len(png)


async def test_caption_limit_counts_visible_text_and_edit_caption_works(fake: FakeTelegramApi, bot: Bot) -> None:
    png = b"\x89PNG\r\n\x1a\n"
    message = await bot.send_photo(GROUP, photo=png, caption="&amp;" * 1024, parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
        await bot.send_photo(GROUP, photo=png, caption="x" * 1025)
    await bot.edit_message_caption(GROUP, message.message_id, caption="v2")
    assert fake.stored_text(GROUP, message.message_id) == "v2"
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_caption(GROUP, message.message_id, caption="v2")
    fake.delete_message(GROUP, message.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_caption(GROUP, message.message_id, caption="v3")


async def test_outage_answers_bad_gateway_and_revoked_token_401(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.outage = True
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(USER, "x")
    fake.outage = False
    fake.revoke_token()
    with pytest.raises(InvalidToken):
        await bot.send_message(USER, "x")


async def test_accept_then_hang_takes_the_message_and_never_answers(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.fail_next("sendMessage", USER, kind="accept_then_hang")
    task = asyncio.create_task(bot.send_message(USER, "taken"))
    [sent] = await fake.wait_for_sent(1)
    assert sent.text == "taken" and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_allowed_updates_filters_kinds_like_telegram(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.enqueue_message(USER, "private", USER, "/start")
    fake.enqueue_edit(USER, "private", USER, 1, "/start edited")
    assert [u.edited_message is not None for u in await bot.get_updates(timeout=0)] == [False, True]
    updates = await bot.get_updates(timeout=0, allowed_updates=["message"])
    assert [u.message is not None for u in updates] == [True]


async def test_too_long_text_is_rejected_like_telegram(fake: FakeTelegramApi, bot: Bot) -> None:
    await bot.send_message(USER, "<b>" + "x" * 4096 + "</b>", parse_mode=ParseMode.HTML)  # tags don't count
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(USER, "x" * 4097)
    assert len(fake.sent) == 1


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_retry_after_carries_seconds(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.fail_next("sendMessage", GROUP, kind="retry_after", retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(GROUP, "x")
    ra = caught.value.retry_after
    assert (ra.total_seconds() if isinstance(ra, timedelta) else float(ra)) == 7.0
    await bot.send_message(GROUP, "x")  # scripted once only
    assert [m.text for m in fake.sent] == ["x"]
    assert len(fake.requests_for("sendmessage")) == 2


@pytest.mark.parametrize(
    ("kind", "error", "text"),
    [
        ("blocked", Forbidden, "bot was blocked by the user"),
        ("kicked", Forbidden, "bot was kicked from the group chat"),
        ("chat_not_found", BadRequest, "Chat not found"),
        ("server_error", NetworkError, "Bad Gateway"),
        ("disconnect", NetworkError, "disconnected"),
    ],
)
async def test_fault_maps_to_ptb_error(
    fake: FakeTelegramApi, bot: Bot, kind: FaultKind, error: type[Exception], text: str
) -> None:
    fake.fail_next("sendMessage", kind=kind)
    with pytest.raises(error, match=text) as caught:
        await bot.send_message(USER, "x")
    if error is NetworkError:
        assert not isinstance(caught.value, BadRequest)
    assert fake.sent == []
    await bot.send_message(USER, "after")  # the client recovers, even from a dropped socket
    assert [m.text for m in fake.sent] == ["after"]


async def test_migrated_gives_new_chat_id(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.fail_next("sendMessage", -200, kind="migrated", migrate_to=GROUP)
    with pytest.raises(ChatMigrated) as caught:
        await bot.send_message(-200, "x")
    assert caught.value.new_chat_id == GROUP


async def test_faults_are_per_chat_counted_and_per_method(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.fail_next("sendMessage", GROUP, kind="blocked", times=2)
    fake.fail_next("sendPhoto", kind="server_error")
    for _ in range(2):
        with pytest.raises(Forbidden):
            await bot.send_message(GROUP, "x")
    await bot.send_message(USER, "other chat unaffected")
    await bot.send_message(GROUP, "third try")
    with pytest.raises(NetworkError):
        await bot.send_photo(USER, photo=b"png")
    assert [m.text for m in fake.sent] == ["other chat unaffected", "third try"]


async def test_get_chat_member_statuses(fake: FakeTelegramApi, bot: Bot) -> None:
    expected: dict[int, tuple[MemberStatus, type[ChatMember]]] = {
        1: ("creator", ChatMemberOwner),
        2: ("administrator", ChatMemberAdministrator),
        3: ("member", ChatMemberMember),
        4: ("kicked", ChatMemberBanned),
    }
    for user_id, (status, _) in expected.items():
        fake.set_member_status(GROUP, user_id, status)
    for user_id, (_, cls) in expected.items():
        member = await bot.get_chat_member(GROUP, user_id)
        assert type(member) is cls
        assert member.user.id == user_id
    assert type(await bot.get_chat_member(GROUP, 99)) is ChatMemberLeft
    admins = await bot.get_chat_administrators(GROUP)
    assert sorted(a.user.id for a in admins) == [1, 2]


async def test_get_chat_returns_full_info(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.enqueue_message(GROUP, "supergroup", USER, "hi", title="Perp Degens")
    chat = await bot.get_chat(GROUP)
    assert (chat.id, chat.type, chat.title) == (GROUP, "supergroup", "Perp Degens")


async def test_my_commands_round_trip(fake: FakeTelegramApi, bot: Bot) -> None:
    commands = [BotCommand("alerts", "List alerts"), BotCommand("mute", "Mute for a while")]
    admin_scope = BotCommandScopeAllChatAdministrators()
    await bot.set_my_commands(commands)
    await bot.set_my_commands(commands[:1], scope=admin_scope)
    assert [c.command for c in await bot.get_my_commands()] == ["alerts", "mute"]
    assert fake.commands == [
        {"command": "alerts", "description": "List alerts"},
        {"command": "mute", "description": "Mute for a while"},
    ]
    assert [c["command"] for c in fake.commands_for({"type": "all_chat_administrators"})] == ["alerts"]
    await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()


async def test_get_updates_offset_confirms_and_limit(fake: FakeTelegramApi, bot: Bot) -> None:
    ids = [fake.enqueue_message(USER, "private", USER, f"m{i}") for i in range(3)]
    assert [u.update_id for u in await bot.get_updates(limit=2)] == ids[:2]
    rest = await bot.get_updates(offset=ids[1] + 1)
    assert [u.message.text for u in rest if u.message] == ["m2"]
    assert await bot.get_updates(offset=ids[2] + 1, timeout=0) == ()


async def test_get_updates_long_poll_wakes_on_enqueue(fake: FakeTelegramApi, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await fake.wait_for_request("getUpdates")
    assert not poll.done()
    update_id = fake.enqueue_message(GROUP, "supergroup", USER, "/alerts@perpwatch_bot BTC 5")
    # Hang guard only: the Event wakes the poll at once, not after 30 s.
    [update] = await asyncio.wait_for(poll, timeout=5)
    assert update.update_id == update_id
    assert update.message is not None and update.message.entities[0].length == len("/alerts@perpwatch_bot")


async def test_get_updates_times_out_empty(fake: FakeTelegramApi) -> None:
    status, body = await raw_call(fake, f"/bot{TOKEN}/getUpdates", form={"timeout": "0.05"})
    assert (status, body) == (200, {"ok": True, "result": []})


async def test_command_entity_counts_utf16_units(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.enqueue_message(USER, "private", USER, "/start 🔥")
    fake.enqueue_message(USER, "private", USER, "not /a command")
    first, second = await bot.get_updates()
    assert first.message is not None and first.message.entities[0].length == 6
    assert second.message is not None and second.message.entities == ()


async def test_latency_applies_to_concurrent_sends(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.latency_s = 0.02
    await asyncio.gather(*(bot.send_message(USER, f"m{i}") for i in range(3)))
    assert sorted(m.text or "" for m in fake.sent) == ["m0", "m1", "m2"]
    assert sorted(m.message_id for m in fake.sent) == [1, 2, 3]


async def test_channel_post_has_sender_chat_not_from(fake: FakeTelegramApi, bot: Bot) -> None:
    fake.enqueue_message(GROUP, "channel", USER, "news", title="Feed")
    [update] = await bot.get_updates()
    assert update.channel_post is not None and update.channel_post.sender_chat is not None
    assert update.channel_post.from_user is None


async def test_application_polling_replies_to_command(fake: FakeTelegramApi) -> None:
    seen_args: list[list[str]] = []

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        seen_args.append(list(context.args or []))
        await update.effective_message.reply_text("<b>ready</b>", parse_mode=ParseMode.HTML)

    app = ApplicationBuilder().token(TOKEN).base_url(fake.api_base_url).base_file_url(fake.file_base_url).build()
    app.add_handler(CommandHandler("start", start))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        fake.enqueue_message(GROUP, "supergroup", USER, "/start@perpwatch_bot now", title="Perp Degens")
        [reply] = await fake.wait_for_sent(1)
        await app.updater.stop()
        await app.stop()

    assert (reply.chat_id, reply.text, reply.parse_mode) == (GROUP, "<b>ready</b>", "HTML")
    assert reply.params["reply_parameters"]["message_id"] == 1
    assert seen_args == [["now"]]
    assert {"getMe", "deleteWebhook", "getUpdates"} <= {r.method for r in fake.requests}


async def test_wrong_token_unknown_method_and_case_insensitive_names(fake: FakeTelegramApi) -> None:
    with pytest.raises(InvalidToken):
        async with Bot("999:WRONG-TOKEN", base_url=fake.api_base_url):
            pass
    assert await raw_call(fake, "/bot999:WRONG-TOKEN/getMe") == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert await raw_call(fake, f"/bot{TOKEN}/sendSticker") == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
    )
    status, body = await raw_call(fake, f"/bot{TOKEN}/SENDMESSAGE", json_body={"chat_id": USER, "text": "json body"})
    assert status == 200 and body["ok"] is True
    assert fake.sent[0].method == "sendMessage" and fake.sent[0].text == "json body"


async def test_wait_for_sent_times_out_with_a_clear_message(fake: FakeTelegramApi) -> None:
    with pytest.raises(SentTimeoutError, match="expected at least 1 sent message"):
        await fake.wait_for_sent(1, timeout=0.05)


async def test_close_is_idempotent_and_ends_long_polls() -> None:
    fake = FakeTelegramApi(token=TOKEN)
    await fake.start()
    async with Bot(TOKEN, base_url=fake.api_base_url) as client:
        poll = asyncio.create_task(client.get_updates(timeout=30))
        await fake.wait_for_request("getUpdates")
        await fake.close()
        assert await asyncio.wait_for(poll, timeout=5) == ()
    await fake.close()
