"""Discord through discord.py: the client, send and edit, and what Discord's answers mean to the dispatcher.

Drawing is `discord_render.py`, slash commands and their sync `discord_commands.py`; this module connects,
posts, edits, answers interactions and classifies errors.

Every channel message carries a nonce derived from the delivery's own, with `enforce_nonce` (discord.py sets
it whenever a nonce is given): Discord then answers a resend from the same bot within a few minutes with the
message it already created, so a send whose answer was lost (a read timeout, a kill before the answer came)
is retried without showing twice.

discord.py's own 429 handling stays on for short waits (it knows the per-route buckets from the headers);
anything longer than `MAX_INLINE_RATELIMIT_S` surfaces as `discord.RateLimited` and becomes `RetryLater`, so
the outbox holds the chat's rows durably instead of a coroutine sleeping on them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Final

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.commands import COMMANDS, Command, run_command
from bot.platforms.delivery import (
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
from bot.platforms.discord_commands import INTERNAL_ERROR, STALE_COMMAND, CommandErrors, slash_command, sync_commands
from bot.platforms.discord_render import MAX_CONTENT, alert_embed, attachment, reply_parts
from bot.platforms.frontend import ChatRegistrar, ContextFactory
from bot.render import Alert, Image, Reply
from storage.models import Chat

__all__ = ["INTERNAL_ERROR", "STALE_COMMAND", "DiscordPlatform", "classify", "part_nonce"]

log = logging.getLogger(__name__)

MAX_INLINE_RATELIMIT_S: Final = 30.0
"""Longest 429 wait discord.py sleeps through inside `send`; discord.py clamps this setting to ≥ 30 s."""
MAX_NONCE: Final = 25
"""Discord refuses a longer nonce (https://discord.com/developers/docs/resources/message#create-message)."""
UNKNOWN_MESSAGE: Final = 10008
UNKNOWN_CHANNEL: Final = 10003


def part_nonce(nonce: str, index: int) -> str:
    """A Discord nonce for part `index` of one delivery: stable across retries and restarts, distinct per
    part, and within Discord's 25 characters whatever the dispatcher's nonce looks like."""
    digest = hashlib.blake2b(f"{nonce}#{index}".encode(), digest_size=12).hexdigest()
    return digest[:MAX_NONCE]


def _retry_after_header(exc: discord.HTTPException, default_s: float) -> float:
    headers = getattr(exc.response, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", default_s))
    except (TypeError, ValueError):
        return default_s


def classify(exc: BaseException) -> DeliveryError:
    """Map what discord.py raised on a channel send or edit onto the dispatcher's outcomes.

    Codes: https://discord.com/developers/docs/topics/opcodes-and-status-codes#json. Any 403 on a send means
    the bot may not post there (50013 Missing Permissions, 50001 Missing Access, 50007 DMs closed), so the
    chat is gone until someone fixes the permissions and talks to the bot again. A connection lost after the
    request went out may have posted the message (`maybe_delivered`); the nonce makes the retry safe.
    """
    if isinstance(exc, discord.RateLimited):
        return RetryLater(exc.retry_after, "Discord rate limit")
    if isinstance(exc, discord.HTTPException):
        reason = f"Discord {exc.status}/{exc.code}: {exc.text or exc.response.reason}"
        if exc.status == 429:
            # discord.py retried five times, or saw a 429 without `Via` (a Cloudflare ban, about an hour).
            return RetryLater(_retry_after_header(exc, 60.0), "Discord rate limit")
        if exc.status == 401:
            return Unauthorized("DISCORD_BOT_TOKEN", "Discord rejected the bot token")
        if isinstance(exc, discord.Forbidden):
            return PermanentFailure(reason, chat_gone=True)
        if isinstance(exc, discord.NotFound):
            if exc.code == UNKNOWN_MESSAGE:
                return MessageGone(reason)
            return PermanentFailure(reason, chat_gone=exc.code == UNKNOWN_CHANNEL)
        if exc.status >= 500:
            return TransientFailure(reason)
        return PermanentFailure(reason, chat_gone=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransientFailure(f"Discord unreachable: {exc.os_error!r}")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return TransientFailure(f"Discord connection lost mid-request: {exc!r}", maybe_delivered=True)
    if isinstance(exc, TimeoutError):
        return TransientFailure("Discord did not answer in time; the message may be posted", maybe_delivered=True)
    return TransientFailure(f"Discord error: {exc!r}")


class _Client(discord.Client):
    def __init__(self, on_setup: Callable[[], Awaitable[None]], on_session: Callable[[], None]) -> None:
        # perpwatch never joins voice: skip discord.py's start-up warnings about missing voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # Interactions need no intent; `guilds` keeps discord.py's channel cache sane (it warns without it).
        # Message intents would only stream every message of every server to us for nothing.
        super().__init__(intents=discord.Intents(guilds=True), max_ratelimit_timeout=MAX_INLINE_RATELIMIT_S)
        self.tree = CommandErrors(self)
        self._on_setup = on_setup
        self._on_session = on_session

    async def setup_hook(self) -> None:
        """Runs inside `login()`, after the application id is known and before the gateway connects."""
        await self._on_setup()

    async def on_connect(self) -> None:
        self._on_session()


class DiscordPlatform(Platform):
    """Discord: a channel is a chat ("group" in a server, "private" in a DM)."""

    name: ClassVar[str] = "discord"
    # https://discord.com/developers/docs/topics/rate-limits: per-route buckets arrive in X-RateLimit-* headers
    # and discord.py waits on them itself; the documented global cap is 50 requests/s per bot. Discord does not
    # publish a per-channel number, but the message-create bucket reports 5 per 5 s per channel in practice.
    # We pace below both so a burst of alerts is paced here (and merged when it backs up) instead of 429ing.
    limits: ClassVar[Limits] = Limits(per_chat=Rate(5, 5.0), overall=Rate(40, 1.0))
    text_limit: ClassVar[int] = MAX_CONTENT
    caption_limit: ClassVar[int] = MAX_CONTENT  # an image rides on a message with its full text

    def __init__(
        self,
        token: str,
        *,
        api_url: str,
        gateway_url: str,
        register_chat: ChatRegistrar,
        make_context: ContextFactory,
        commands: Sequence[Command] = COMMANDS,
        ready_timeout_s: float = 60.0,
        defer_after_s: float = 2.0,
        send_timeout_s: float = 30.0,
    ) -> None:
        """`defer_after_s`: Discord drops an interaction not answered within 3 s, so a command still running
        after this long is deferred ("thinking…") and answered by a followup; 0 defers every command.

        `send_timeout_s` bounds one channel post or edit, discord.py's short 429 waits included; past it the
        send may have been posted (`maybe_delivered`) and the retry is made safe by the nonce.
        """
        self._token = token
        self.api_url = api_url.rstrip("/")
        self.gateway_url = gateway_url
        self.register_chat = register_chat
        self.make_context = make_context
        self.commands = commands
        self.ready_timeout_s = ready_timeout_s
        self.defer_after_s = defer_after_s
        self.send_timeout_s = send_timeout_s
        self._session_up = asyncio.Event()
        self.client = _Client(self._sync_commands, self._session_up.set)
        for command in commands:
            self.client.tree.add_command(slash_command(command, self._run_command))
        self._runner: asyncio.Task[None] | None = None
        self._stopped = False

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Log in (which syncs commands), connect the gateway in a task, and return once READY arrived.

        READY rather than `on_ready`: discord.py delays `on_ready` until guilds stop streaming in
        (`guild_ready_timeout`, 2 s), but nothing here needs its guild cache: interactions carry their own
        channel and permissions and sends go to a partial channel by id.
        """
        # Process-global: discord.py builds every REST URL (webhooks and interaction callbacks too) from the
        # class attribute `Route.BASE`, and the gateway from `DEFAULT_GATEWAY`. One process runs one Discord
        # client, so setting them from our settings here is the supported way to aim it at another endpoint.
        Route.BASE = self.api_url
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            await self.client.login(self._token)
        except discord.LoginFailure:
            await self.stop()
            raise PlatformStartError(
                f"Discord refused DISCORD_BOT_TOKEN (401 from {self.api_url}/users/@me); "
                "check the token in the environment or .env"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError, discord.HTTPException) as exc:
            await self.stop()
            raise PlatformStartError(f"cannot reach the Discord API at {self.api_url}: {_one_line(exc)}") from None
        except BaseException:
            await self.stop()
            raise
        self._runner = asyncio.create_task(self.client.connect(reconnect=True), name="discord:gateway")
        try:
            await self._until_session(self._runner)
        except BaseException:
            await self.stop()
            raise
        self._runner.add_done_callback(_gateway_ended)
        user = self.client.user
        log.info(
            "discord started bot=%s application=%s commands=%d",
            user.name if user else "?",
            self.client.application_id,
            len(self.commands),
        )

    async def _until_session(self, runner: asyncio.Task[None]) -> None:
        """Wait for READY, or say why the gateway task ended first (bad intents, closed, no answer)."""
        waiter = asyncio.create_task(self._session_up.wait(), name="discord:ready")
        try:
            done, _ = await asyncio.wait(
                {waiter, runner}, timeout=self.ready_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if waiter in done:
            return
        cause = runner.exception() if runner.done() and not runner.cancelled() else None
        if isinstance(cause, AttributeError) and cause.__context__ is not None:
            # discord.py 2.7.1 retries a failed first connect by reading `self.ws.sequence` while `ws` is still
            # None; the AttributeError hides the real fault (refused, DNS, TLS), which is its context.
            cause = cause.__context__
        if cause is not None:
            why = repr(cause)
        elif runner.done():
            why = "the gateway connection ended"
        else:
            why = f"no READY within {self.ready_timeout_s:g}s"
        raise PlatformStartError(f"Discord gateway at {self.gateway_url} did not start a session: {why}") from None

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.client.close()
        if self._runner is not None:
            # close() already shut the socket and the HTTP session; a connect() sleeping in its reconnect
            # backoff would only notice after the sleep, so end it now. Its error, if any, was already logged.
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    async def _sync_commands(self) -> None:
        await sync_commands(self.client, self.client.tree)

    # --- delivery -----------------------------------------------------------------------------------
    async def send(self, chat: Chat, message: Alert | Reply, *, nonce: str, reply_to: str | None = None) -> MessageRef:
        """An alert is one embed; a reply is one message per part. An image is attached to the first.

        A reply split in parts that fails half-way is retried whole: the parts already posted come back
        from Discord by their nonces instead of posting again.
        """
        # A partial channel needs no cache hit: DMs and channels of servers still streaming in work alike.
        channel = self.client.get_partial_messageable(int(chat.platform_chat_id))
        reference = (
            discord.MessageReference(message_id=int(reply_to), channel_id=channel.id, fail_if_not_exists=False)
            if reply_to is not None
            else None
        )
        if isinstance(message, Alert):
            sent = await self._post(channel, None, alert_embed(message), message.image, part_nonce(nonce, 0), reference)
            return MessageRef((sent,))
        ids = []
        for index, content in enumerate(reply_parts(message)):
            image = message.image if index == 0 else None
            ids.append(await self._post(channel, content or None, None, image, part_nonce(nonce, index), reference))
            reference = None
        return MessageRef(tuple(ids))

    async def _post(
        self,
        channel: discord.PartialMessageable,
        content: str | None,
        embed: discord.Embed | None,
        image: Image | None,
        nonce: str,
        reference: discord.MessageReference | None,
    ) -> str:
        # Only what is set: `send`'s overloads take each of these as a value, never as None.
        extra: dict[str, Any] = {"embed": embed, "reference": reference}
        if image is not None:
            extra["file"] = attachment(image)
        try:
            async with asyncio.timeout(self.send_timeout_s):
                sent = await channel.send(
                    content,
                    nonce=nonce,
                    allowed_mentions=discord.AllowedMentions.none(),
                    **{key: value for key, value in extra.items() if value is not None},
                )
        except (discord.DiscordException, aiohttp.ClientError, TimeoutError) as exc:
            raise classify(exc) from exc
        return str(sent.id)

    async def edit(self, chat: Chat, ref: MessageRef, alert: Alert) -> MessageRef:
        """PATCH the alert's embed; its attached image stays (the embed keeps pointing at it)."""
        channel = self.client.get_partial_messageable(int(chat.platform_chat_id))
        target = channel.get_partial_message(int(ref.primary))
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await target.edit(embed=alert_embed(alert), allowed_mentions=discord.AllowedMentions.none())
        except (discord.DiscordException, aiohttp.ClientError, TimeoutError) as exc:
            raise classify(exc) from exc
        return ref

    # --- commands -----------------------------------------------------------------------------------
    async def _run_command(self, command: Command, interaction: discord.Interaction, args: dict[str, str]) -> None:
        """Answered on the interaction itself, not through the dispatcher: Discord wants the first answer
        within 3 s on the interaction's own webhook route, which its channel buckets do not count."""
        chat = await self.register_chat("discord", str(interaction.channel_id), *_chat_kind_and_title(interaction))

        async def is_admin() -> bool:
            perms = interaction.permissions  # resolved for this member in this channel, as Discord sent them
            return perms.manage_guild or perms.administrator

        ctx = self.make_context("discord", chat, str(interaction.user.id), args, is_admin)
        work = asyncio.ensure_future(run_command(command, ctx))
        deferred = False
        try:
            if self.defer_after_s > 0:
                await asyncio.wait({work}, timeout=self.defer_after_s)
            if not work.done():
                await interaction.response.defer(thinking=True)
                deferred = True
            reply = await work
        except BaseException:
            work.cancel()
            raise
        try:
            await _answer(interaction, reply, deferred=deferred)
        except discord.HTTPException as exc:
            log.warning("could not answer command command=%s chat=%d error=%s", command.name, chat.id, exc)


async def _answer(interaction: discord.Interaction, reply: Reply, *, deferred: bool) -> None:
    """The first part as the interaction's response (or, after a defer, its first followup, which replaces
    "thinking…"), every further part as a followup; the image rides on the first."""
    mentions = discord.AllowedMentions.none()
    ephemeral = not reply.ok
    for index, content in enumerate(reply_parts(reply)):
        file = attachment(reply.image) if index == 0 and reply.image is not None else discord.utils.MISSING
        if index == 0 and not deferred:
            await interaction.response.send_message(content, ephemeral=ephemeral, allowed_mentions=mentions, file=file)
        else:
            await interaction.followup.send(content, ephemeral=ephemeral, allowed_mentions=mentions, file=file)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: {exc.os_error.strerror or exc.os_error!r}"
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status} {exc.text or exc.response.reason}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _chat_kind_and_title(interaction: discord.Interaction) -> tuple[str, str | None]:
    if interaction.guild_id is None:
        return "private", None
    channel_name = getattr(interaction.channel, "name", None)
    guild = interaction.guild
    channel = f"#{channel_name}" if channel_name else None
    if guild is not None and channel:
        return "group", f"{guild.name} {channel}"
    return "group", channel


def _gateway_ended(task: asyncio.Task[None]) -> None:
    """discord.py reconnects by itself; the task ends only on close or a fatal gateway error (bad intents,
    revoked token). Alerts still go out over REST, so say it loudly and carry on."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("discord gateway stopped; commands will not be answered error=%r", error)
