"""Telegram through python-telegram-bot: alerts as HTML, commands by long polling.

Pacing is the dispatcher's (it must know a chat's capacity to merge a backlog), so PTB's AIORateLimiter is
not installed: it has no per-chat limit and would hide `RetryAfter` behind its own waits, while our outbox
needs to see every 429 to hold the chat's rows durably.
"""

from __future__ import annotations

import html
import logging
import warnings
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from telegram import BotCommand, Update
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes
from telegram.warnings import PTBDeprecationWarning, PTBUserWarning

from bot.commands import COMMANDS, Command, CommandError, parse_text_args, run_command
from bot.platforms.base import (
    ChatMoved,
    ChatRegistrar,
    ContextFactory,
    Limits,
    PermanentFailure,
    Platform,
    PlatformStartError,
    Rate,
    RetryLater,
    TransientFailure,
)
from bot.platforms.telegram_http import AiohttpRequest
from bot.render import Alert, Reply
from storage.models import Chat

log = logging.getLogger(__name__)

# PTB 22 warns on every 429 because RetryAfter reads its own deprecated int property; we read the stored
# timedelta (see retry_after_seconds), so the warning says nothing to an operator.
warnings.filterwarnings("ignore", message=r".*attribute `retry_after` will be of type", category=PTBDeprecationWarning)
# `send` asks for sendMessage's raw result on purpose (see there); PTB suggests its typed method instead,
# which matters only for `Defaults`, and this bot sets none.
warnings.filterwarnings("ignore", message=r"Please use 'Bot\.sendMessage' instead of", category=PTBUserWarning)

MAX_TEXT = 4096
ANONYMOUS_ADMIN_ID = 1087968824  # Telegram's stand-in user for anonymous group admins


def esc(text: str) -> str:
    """Text content needs only &, < and > escaped; quotes stay readable."""
    return html.escape(text, quote=False)


def alert_html(alert: Alert) -> str:
    lines = [f"<b>{esc(alert.title)}</b>", f"<b>{esc(alert.headline)}</b>", ""]
    for field in alert.fields:
        value = f"<b>{esc(field.value)}</b>" if field.emphasis else esc(field.value)
        lines.append(f"{esc(field.name)}: {value}")
    lines += [f"• {esc(item)}" for item in alert.items]
    if alert.footer:
        lines += ["", f"<i>{esc(alert.footer)}</i>"]
    if alert.url:
        lines.append(f'<a href="{html.escape(alert.url, quote=True)}">{esc(alert.link_label)}</a>')
    return _fit("\n".join(lines))


def reply_html(reply: Reply) -> str:
    head = [f"<b>{esc(reply.title)}</b>"] if reply.title else []
    return _fit("\n".join([*head, *(esc(line) for line in reply.lines)]))


def _fit(text: str) -> str:
    """Telegram refuses over 4096 characters; cut at a line break and say so rather than fail the send."""
    if len(text) <= MAX_TEXT:
        return text
    cut = text.rfind("\n", 0, MAX_TEXT - 20)
    return text[: cut if cut > 0 else MAX_TEXT - 20] + "\n… (truncated)"


def retry_after_seconds(exc: RetryAfter) -> float:
    """PTB 22 returns int seconds with a deprecation warning; later majors return a timedelta."""
    value: Any = exc._retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def classify(exc: TelegramError) -> Exception:
    """Map PTB's exceptions onto the dispatcher's four outcomes."""
    if isinstance(exc, RetryAfter):
        return RetryLater(retry_after_seconds(exc), "Telegram flood control")
    if isinstance(exc, ChatMigrated):
        return ChatMoved(str(exc.new_chat_id))
    if isinstance(exc, Forbidden):
        return PermanentFailure(f"Telegram: {exc.message}", chat_gone=True)
    if isinstance(exc, BadRequest):
        gone = "chat not found" in exc.message.lower()
        return PermanentFailure(f"Telegram: {exc.message}", chat_gone=gone)
    if isinstance(exc, InvalidToken):
        return TransientFailure("Telegram rejected the bot token; check TELEGRAM_BOT_TOKEN")
    if isinstance(exc, NetworkError):
        return TransientFailure(f"Telegram network error: {exc.message}")
    return TransientFailure(f"Telegram error: {exc.message}")


class TelegramPlatform(Platform):
    name: ClassVar[str] = "telegram"
    # https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this
    limits: ClassVar[Limits] = Limits(per_chat=Rate(1, 1.0), per_group=Rate(20, 60.0), overall=Rate(30, 1.0))

    def __init__(
        self,
        token: str,
        *,
        api_url: str,
        register_chat: ChatRegistrar,
        make_context: ContextFactory,
        commands: Sequence[Command] = COMMANDS,
        poll_timeout_s: int = 10,
        connection_pool_size: int = 32,
    ) -> None:
        self.api_url = api_url
        self.register_chat = register_chat
        self.make_context = make_context
        self.commands = commands
        self.poll_timeout_s = poll_timeout_s
        self._requests = (AiohttpRequest(pool_size=connection_pool_size), AiohttpRequest(pool_size=1))
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(token)
            .base_url(f"{api_url}/bot")
            .base_file_url(f"{api_url}/file/bot")
            .request(self._requests[0])
            .get_updates_request(self._requests[1])
            .build()
        )
        for command in commands:
            self.app.add_handler(CommandHandler([command.name, *command.aliases], self._handler(command)))
        self._running = False

    async def start(self) -> None:
        try:
            await self.app.initialize()
        except (InvalidToken, NetworkError) as exc:
            for request in self._requests:  # PTB leaves them open when initialize fails
                await request.shutdown()
            if isinstance(exc, InvalidToken):
                raise PlatformStartError("Telegram rejected TELEGRAM_BOT_TOKEN (check it with @BotFather)") from None
            raise PlatformStartError(f"cannot reach the Telegram Bot API at {self.api_url}: {exc.message}") from None
        await self._sync_commands()
        await self.app.start()
        assert self.app.updater is not None
        await self.app.updater.start_polling(timeout=self.poll_timeout_s, poll_interval=0.0)
        self._running = True
        log.info("telegram started bot=@%s commands=%d", self.app.bot.username, len(self.commands))

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    async def _sync_commands(self) -> None:
        wanted = [BotCommand(c.name, c.summary[:256]) for c in self.commands]
        current = await self.app.bot.get_my_commands()
        if [(c.command, c.description) for c in current] != [(c.command, c.description) for c in wanted]:
            await self.app.bot.set_my_commands(wanted)
            log.info("telegram command list updated count=%d", len(wanted))

    async def send(self, chat: Chat, alert: Alert) -> str | None:
        """One sendMessage through PTB's request layer (its transport, error mapping and retry_after),
        asking for the raw result: building a full `telegram.Message` from every reply, only to read its
        id, was an eighth of the bot's CPU per alert in `bench/pipeline.py`'s profile."""
        try:
            result = await self.app.bot.do_api_request(
                "sendMessage",
                api_kwargs={
                    "chat_id": int(chat.platform_chat_id),
                    "text": alert_html(alert),
                    "parse_mode": ParseMode.HTML.value,
                    "link_preview_options": {"is_disabled": True},
                },
            )
        except TelegramError as exc:
            raise classify(exc) from exc
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return str(message_id) if message_id is not None else None

    # --- commands ---------------------------------------------------------------------------------
    def _handler(self, command: Command) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]:
        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.effective_message
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
                member = await context.bot.get_chat_member(tg_chat.id, user.id)
                return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)

            try:
                args = parse_text_args(command, context.args or [])
            except CommandError as exc:
                reply = Reply.of(str(exc), f"Usage: {command.usage}", ok=False)
            else:
                reply = await run_command(command, self.make_context("telegram", chat, user_id, args, is_admin))
            try:
                await message.reply_text(reply_html(reply), parse_mode=ParseMode.HTML, disable_web_page_preview=True)
            except TelegramError as exc:
                log.warning("could not answer command command=%s chat=%s error=%s", command.name, chat.id, exc)

        return handle
