"""Telegram through python-telegram-bot: alerts and replies as HTML, images as photos, commands by polling.

Pacing is the dispatcher's (it must know a chat's capacity to merge a backlog), so PTB's AIORateLimiter is
not installed: it has no per-chat limit and would hide `RetryAfter` behind its own waits, while our outbox
needs to see every 429 to hold the chat's rows durably.

Telegram has no idempotency key, so a send whose answer never came may be shown twice if it is retried.
Two things keep that window small: the read timeout sits far above the API's slow answers (a 5 s timeout
fired on a 6 s answer and doubled an alert that had no fault at all), and such a send is reported as
`maybe_delivered`, so the dispatcher says so in the log when it retries it.

Polling is our own loop rather than PTB's `Updater`: the Updater sleeps out its network back-off (up to 30 s)
before it notices a stop, which kept a SIGTERM after an outage waiting past a container's 10 s grace. Ours
waits on the shared clock and a stop event, so `stop()` returns at once whatever the back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import warnings
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Final

from telegram import BotCommand, InputFile, Update
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes, filters
from telegram.warnings import PTBDeprecationWarning, PTBUserWarning

from bot.commands import COMMANDS, Command, CommandError, parse_text_args, run_command
from bot.platforms.delivery import (
    ChatMoved,
    DeliveryError,
    Limits,
    MessageGone,
    MessageRef,
    PermanentFailure,
    Platform,
    PlatformStartError,
    Rate,
    RetryLater,
    TransientFailure,
    Unauthorized,
)
from bot.platforms.frontend import ChatRegistrar, ContextFactory, ReplySender
from bot.platforms.telegram_http import AiohttpRequest, AnswerLost, AnswerTimedOut
from bot.render import Alert, Image, Reply
from bot.text import clip, fit, split
from perpwatch.backoff import Ladder, should_log
from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.models import Chat

log = logging.getLogger(__name__)

# PTB 22 warns on every 429 because RetryAfter reads its own deprecated int property; we read the stored
# timedelta (see retry_after_seconds), so the warning says nothing to an operator.
warnings.filterwarnings("ignore", message=r".*attribute `retry_after` will be of type", category=PTBDeprecationWarning)
# Sends ask for the raw result on purpose (see `_call`); PTB suggests its typed methods instead, which matter
# only for `Defaults`, and this bot sets none.
warnings.filterwarnings("ignore", message=r"Please use 'Bot\.\w+' instead of", category=PTBUserWarning)

TOKEN_SETTING: Final = "TELEGRAM_BOT_TOKEN"  # noqa: S105 - the setting's name, not a token
# https://core.telegram.org/bots/api#sendmessage and #sendphoto: counted after entities are parsed.
MAX_TEXT: Final = 4096
MAX_CAPTION: Final = 1024
MAX_FIELD: Final = 1024
"""A field value longer than this is clipped: alerts stay one message, and fields are never the long part."""
ANONYMOUS_ADMIN_ID: Final = 1087968824  # Telegram's stand-in user for anonymous group admins
POLL_LADDER: Final = Ladder((1.0, 2.0, 4.0, 8.0, 15.0, 30.0))
"""Waits between failed getUpdates while the Bot API is away; a stop ends any of them at once."""
POLL_READ_SLACK_S: Final = 10.0
"""How long past the long-poll timeout a getUpdates may stay silent before the connection counts as dead."""
STOP_CONFIRM_S: Final = 2.0
"""At stop, one short getUpdates confirms the offset so updates are not fetched twice; no longer than this."""
ADMIN_CHECK_TIMEOUT_S: Final = 5.0
"""getChatMember runs while a command waits; a slow API answers "could not check" rather than holding it."""
GONE_MESSAGE: Final = ("message to edit not found", "message can't be edited", "message_id_invalid")
EDIT_TARGET_HAS_NO_TEXT: Final = "there is no text in the message to edit"
NOT_MODIFIED: Final = "message is not modified"
_TAG: Final = re.compile(r"<[^>]*>")


# --- rendering -------------------------------------------------------------------------------------


def esc(text: str) -> str:
    """Text content needs only &, < and > escaped; quotes stay readable."""
    return html.escape(text, quote=False)


def visible_length(markup: str) -> int:
    """What Telegram's limits count: the text once the HTML is parsed. Counted in UTF-16 units, which are
    never fewer than characters, because which of the two Telegram counts is unverified."""
    return len(html.unescape(_TAG.sub("", markup)).encode("utf-16-le")) // 2


def _bold(text: str) -> str:
    return f"<b>{esc(text)}</b>"


def _item(text: str) -> str:
    return f"• {esc(text)}"


def alert_html(alert: Alert, limit: int = MAX_TEXT) -> str:
    """One message: bold title and headline, the fields, the merged items (cut with a marker if too many),
    the footer and the link. An alert is never split: a later revision edits it in place."""
    top = [_bold(alert.title), _bold(alert.headline), ""]
    for field in alert.fields:
        value = esc(clip(field.value, MAX_FIELD))
        top.append(f"{esc(field.name)}: <b>{value}</b>" if field.emphasis else f"{esc(field.name)}: {value}")
    bottom = []
    if alert.footer:
        bottom += ["", f"<i>{esc(clip(alert.footer, MAX_FIELD))}</i>"]
    if alert.url:
        bottom.append(f'<a href="{html.escape(alert.url, quote=True)}">{esc(alert.link_label)}</a>')
    middle = []
    if alert.items:
        room = limit - visible_length("\n".join([*top, *bottom])) - 2
        middle.append(fit(alert.items, max(room, 64), render=_item, measure=visible_length))
    return "\n".join([*top, *middle, *bottom])


def reply_parts(reply: Reply, limit: int = MAX_TEXT) -> list[str]:
    """A reply as HTML messages within the limit: a bold title, then whole lines; split, never cut."""
    return split(reply.lines, limit, render=esc, measure=visible_length, head=reply.title, render_head=_bold)


def short_caption(image: Image, fallback: str) -> str:
    """The caption of a photo whose text follows as a message of its own."""
    return esc(clip(image.caption or fallback, MAX_CAPTION))


# --- errors ----------------------------------------------------------------------------------------


def retry_after_seconds(exc: RetryAfter) -> float:
    """PTB 22 returns int seconds with a deprecation warning; later majors return a timedelta."""
    value: Any = exc._retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def classify(exc: TelegramError) -> DeliveryError:
    """Map PTB's exceptions onto the delivery contract's outcomes.

    A 401 reaches us as `InvalidToken`, or, through `do_api_request` once the bot is initialised, as
    `EndPointNotFound` (PTB reads 401 and 404 alike, and a 404 there could mean an unknown method; ours are
    all known): either way the token was refused.
    """
    if isinstance(exc, RetryAfter):
        return RetryLater(retry_after_seconds(exc), "Telegram flood control")
    if isinstance(exc, ChatMigrated):
        return ChatMoved(str(exc.new_chat_id))
    if isinstance(exc, InvalidToken | EndPointNotFound):
        return Unauthorized(TOKEN_SETTING, "Telegram rejected the bot token")
    if isinstance(exc, Forbidden):
        return PermanentFailure(f"Telegram: {exc.message}", chat_gone=True)
    if isinstance(exc, BadRequest):
        text = exc.message.lower()
        if any(marker in text for marker in GONE_MESSAGE) or EDIT_TARGET_HAS_NO_TEXT in text:
            return MessageGone(f"Telegram: {exc.message}")
        return PermanentFailure(f"Telegram: {exc.message}", chat_gone="chat not found" in text)
    if isinstance(exc, AnswerTimedOut | AnswerLost):
        return TransientFailure(f"Telegram: {exc.message}; the message may be shown", maybe_delivered=True)
    if isinstance(exc, NetworkError):
        return TransientFailure(f"Telegram network error: {exc.message}")
    return TransientFailure(f"Telegram error: {exc.message}")


def _is_not_modified(exc: TelegramError) -> bool:
    return isinstance(exc, BadRequest) and NOT_MODIFIED in exc.message.lower()


# --- the platform ----------------------------------------------------------------------------------


class TelegramPlatform(Platform):
    name: ClassVar[str] = "telegram"
    # https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this: about 1 a second per
    # chat, 20 a minute per group, 30 a second overall. A group's 20 a minute is kept as one message every 3 s
    # (with the pacer's margin, at most 20 in any minute): a burst of 20 at once would leave the group mute
    # for the rest of the minute, while a steady spacing lets a backlog be merged into the next message.
    limits: ClassVar[Limits] = Limits(per_chat=Rate(1, 1.0), per_group=Rate(1, 3.0), overall=Rate(30, 1.0))
    text_limit: ClassVar[int] = MAX_TEXT
    caption_limit: ClassVar[int] = MAX_CAPTION

    def __init__(
        self,
        token: str,
        *,
        api_url: str,
        register_chat: ChatRegistrar,
        make_context: ContextFactory,
        send_reply: ReplySender,
        commands: Sequence[Command] = COMMANDS,
        clock: Clock = SYSTEM_CLOCK,
        poll_timeout_s: int = 10,
        send_timeout_s: float = 30.0,
        connection_pool_size: int = 32,
    ) -> None:
        """`send_timeout_s` is the read timeout of every call but getUpdates: well above the Bot API's slow
        answers (seconds under load), because a send that times out may still be shown and cannot be
        retried without risking a duplicate."""
        self.api_url = api_url
        self.register_chat = register_chat
        self.make_context = make_context
        self.send_reply = send_reply
        self.commands = commands
        self.clock = clock
        self.poll_timeout_s = poll_timeout_s
        self._requests = (
            AiohttpRequest(pool_size=connection_pool_size, read_timeout_s=send_timeout_s),
            AiohttpRequest(pool_size=1, read_timeout_s=send_timeout_s),
        )
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(token)
            .base_url(f"{api_url}/bot")
            .base_file_url(f"{api_url}/file/bot")
            .request(self._requests[0])
            .get_updates_request(self._requests[1])
            .updater(None)
            .build()
        )
        for command in commands:
            # New messages only: PTB's default also fires on edits, and editing a command re-ran it.
            handler = CommandHandler(
                [command.name, *command.aliases], self._handler(command), filters=filters.UpdateType.MESSAGE
            )
            self.app.add_handler(handler)
        self._running = False
        self._stopping = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._offset = 0

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.app.initialize()
        except (InvalidToken, NetworkError) as exc:
            for request in self._requests:  # PTB leaves them open when initialize fails
                await request.shutdown()
            if isinstance(exc, InvalidToken):
                raise PlatformStartError(f"Telegram rejected {TOKEN_SETTING} (check it with @BotFather)") from None
            raise PlatformStartError(f"cannot reach the Telegram Bot API at {self.api_url}: {exc.message}") from None
        await self._sync_commands()
        await self.app.bot.delete_webhook()  # getUpdates answers 409 while a webhook is set
        await self.app.start()
        self._stopping.clear()
        self._poller = asyncio.create_task(self._poll(), name="telegram:poll")
        self._running = True
        log.info("telegram started bot=@%s commands=%d", self.app.bot.username, len(self.commands))

    async def stop(self) -> None:
        """Bounded whatever the Bot API does: the poll is cancelled, the offset confirmation has a short
        deadline, and handlers' own calls carry timeouts."""
        if not self._running:
            return
        self._running = False
        self._stopping.set()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        with contextlib.suppress(TelegramError, TimeoutError):
            async with asyncio.timeout(STOP_CONFIRM_S):
                await self.app.bot.get_updates(offset=self._offset, timeout=0, allowed_updates=["message"])
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    async def _poll(self) -> None:
        """Long-poll new messages only (`allowed_updates`: edits never arrive) and hand them to PTB's
        handlers; while the API is away, wait on the ladder, logging the outage's edges."""
        failures = 0
        while not self._stopping.is_set():
            try:
                updates = await self.app.bot.get_updates(
                    offset=self._offset,
                    timeout=self.poll_timeout_s,
                    read_timeout=POLL_READ_SLACK_S,
                    allowed_updates=["message"],
                )
            except RetryAfter as exc:
                await self.clock.wait(self._stopping, retry_after_seconds(exc))
                continue
            except (InvalidToken, EndPointNotFound):
                log.error("telegram rejected %s; commands are not read until it is fixed", TOKEN_SETTING)
                return
            except TelegramError as exc:
                failures += 1
                if should_log(failures):
                    log.warning("telegram polling failed attempt=%d error=%s", failures, exc.message)
                await self.clock.wait(self._stopping, POLL_LADDER.at(failures - 1))
                continue
            if failures:
                log.info("telegram polling recovered after=%d failures", failures)
                failures = 0
            for update in updates:
                self._offset = update.update_id + 1
                await self.app.update_queue.put(update)

    async def _sync_commands(self) -> None:
        wanted = [BotCommand(c.name, c.summary[:256]) for c in self.commands]
        current = await self.app.bot.get_my_commands()
        if [(c.command, c.description) for c in current] != [(c.command, c.description) for c in wanted]:
            await self.app.bot.set_my_commands(wanted)
            log.info("telegram command list updated count=%d", len(wanted))

    # --- delivery -----------------------------------------------------------------------------------
    async def send(self, chat: Chat, message: Alert | Reply, *, nonce: str, reply_to: str | None = None) -> MessageRef:
        """An alert is one message; a reply is as many as it needs. With an image, the photo carries the
        text as its caption when it fits, else a short caption, and the text follows as messages.

        `nonce` is unused: the Bot API has no idempotency key. A reply whose later part fails is retried
        whole by the dispatcher, so its earlier parts can show twice; alerts are one part.
        """
        chat_id = int(chat.platform_chat_id)
        if isinstance(message, Alert):
            texts = [alert_html(message)]
            fallback = message.title
        else:
            texts = reply_parts(message)
            fallback = message.title or ""
        ids: list[str] = []
        thread = reply_to
        image = message.image
        if image is not None:
            fits = len(texts) == 1 and visible_length(texts[0]) <= MAX_CAPTION
            caption = texts[0] if fits else short_caption(image, fallback)
            ids.append(await self._photo(chat_id, image, caption, thread))
            texts = [] if fits else texts
            thread = None
        for text in texts:
            ids.append(await self._text(chat_id, text, thread))
            thread = None
        return MessageRef(tuple(ids))

    async def _text(self, chat_id: int, text: str, reply_to: str | None) -> str:
        kwargs: dict[str, Any] = {
            "chat_id": chat_id,
            "text": text,
            "parse_mode": ParseMode.HTML.value,
            "link_preview_options": {"is_disabled": True},
        }
        if reply_to is not None:
            # A command deleted before its answer went out must not fail the answer.
            kwargs["reply_parameters"] = {"message_id": int(reply_to), "allow_sending_without_reply": True}
        return await self._call("sendMessage", kwargs)

    async def _photo(self, chat_id: int, image: Image, caption: str, reply_to: str | None) -> str:
        kwargs: dict[str, Any] = {
            "chat_id": chat_id,
            "photo": InputFile(image.png, filename=image.filename),
            "caption": caption,
            "parse_mode": ParseMode.HTML.value,
        }
        if reply_to is not None:
            kwargs["reply_parameters"] = {"message_id": int(reply_to), "allow_sending_without_reply": True}
        return await self._call("sendPhoto", kwargs)

    async def _call(self, method: str, kwargs: dict[str, Any]) -> str:
        """One Bot API call through PTB's request layer (its transport, encoding and error mapping), asking
        for the raw result: building a full `telegram.Message` from every reply, only to read its id, was an
        eighth of the bot's CPU per alert in `bench/pipeline.py`'s profile."""
        try:
            result = await self.app.bot.do_api_request(method, api_kwargs=kwargs)
        except TelegramError as exc:
            raise classify(exc) from exc
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if message_id is None:
            raise TransientFailure(f"Telegram answered {method} without a message id", maybe_delivered=True)
        return str(message_id)

    async def edit(self, chat: Chat, ref: MessageRef, alert: Alert) -> MessageRef:
        """editMessageText, or for a photo whose caption holds the text, editMessageCaption; "not modified"
        is done, a message that is gone raises `MessageGone`."""
        chat_id = int(chat.platform_chat_id)
        kwargs: dict[str, Any] = {"chat_id": chat_id, "parse_mode": ParseMode.HTML.value}
        if alert.image is not None and len(ref.ids) == 1:
            method, target = "editMessageCaption", ref.primary
            kwargs["caption"] = alert_html(alert, MAX_CAPTION)
        else:
            method, target = "editMessageText", ref.ids[-1] if alert.image is not None else ref.primary
            kwargs |= {"text": alert_html(alert), "link_preview_options": {"is_disabled": True}}
        kwargs["message_id"] = int(target)
        try:
            await self.app.bot.do_api_request(method, api_kwargs=kwargs)
        except TelegramError as exc:
            if _is_not_modified(exc):
                return ref
            raise classify(exc) from exc
        return ref

    # --- commands -----------------------------------------------------------------------------------
    def _handler(self, command: Command) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]:
        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.message
            tg_chat = update.effective_chat
            user = update.effective_user
            if message is None or tg_chat is None:
                return
            kind = "private" if tg_chat.type == ChatType.PRIVATE else "group"
            chat = await self.register_chat("telegram", str(tg_chat.id), kind, tg_chat.title)
            user_id = str(user.id) if user else ""

            async def is_admin() -> bool:
                if message.sender_chat is not None and message.sender_chat.id == tg_chat.id:
                    return True  # an anonymous admin posting as the group itself
                if user is None or user.id == ANONYMOUS_ADMIN_ID:
                    return False
                member = await context.bot.get_chat_member(
                    tg_chat.id, user.id, read_timeout=ADMIN_CHECK_TIMEOUT_S, connect_timeout=ADMIN_CHECK_TIMEOUT_S
                )
                return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)

            try:
                args = parse_text_args(command, context.args or [])
            except CommandError as exc:
                reply = Reply.of(str(exc), f"Usage: {command.usage}", ok=False)
            else:
                reply = await run_command(command, self.make_context("telegram", chat, user_id, args, is_admin))
            try:
                await self.send_reply(chat, reply, str(message.message_id))
            except Exception:
                log.exception("could not queue a command answer command=%s chat=%s", command.name, chat.id)

        return handle
