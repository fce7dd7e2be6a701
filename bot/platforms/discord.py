"""Discord through discord.py: alerts as embeds, commands as slash commands over the gateway.

The shape mirrors the Telegram adapter: one slash command per entry of the shared COMMANDS registry, chats
registered through `register_chat`, every command run through the shared `run_command` (which is the one
access gate on every platform, so a refusal reads the same on Telegram and Discord), and one function that
classifies what Discord answered into the dispatcher's four outcomes.

Because `run_command` is the gate, there is no cog `interaction_check` and no `default_member_permissions` on
the synced commands: every member sees every command, and one who may not use it is told why (Manage Server
or Administrator, or PERPWATCH_ADMIN_IDS) instead of finding it missing, and a server's own per-command
overrides can never disagree with the rule the bot enforces. The tree's `on_error` is the one error path.

discord.py's own 429 handling stays on for short waits (it knows the per-route buckets from the headers);
anything longer than `MAX_INLINE_RATELIMIT_S` surfaces as `discord.RateLimited` and becomes `RetryLater`, so
the outbox holds the chat's rows durably instead of a coroutine sleeping on them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, Final

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route
from discord.utils import escape_markdown

from bot.commands import COMMANDS, Command, Param, run_command
from bot.platforms.base import (
    ChatRegistrar,
    ContextFactory,
    DeliveryError,
    Limits,
    PermanentFailure,
    Platform,
    PlatformStartError,
    Rate,
    RetryLater,
    TransientFailure,
)
from bot.render import Alert, Reply, Tone
from storage.models import Chat

log = logging.getLogger(__name__)


# Embed and message limits; Discord answers 400/50035 past any of them.
# https://discord.com/developers/docs/resources/message#embed-object-embed-limits
MAX_CONTENT: Final = 2000
MAX_TITLE: Final = 256
MAX_DESCRIPTION: Final = 4096
MAX_FIELDS: Final = 25
MAX_FIELD_NAME: Final = 256
MAX_FIELD_VALUE: Final = 1024
MAX_FOOTER: Final = 2048
MAX_EMBED_TOTAL: Final = 6000
# https://discord.com/developers/docs/interactions/application-commands#application-command-object
MAX_COMMAND_DESCRIPTION: Final = 100
MAX_CHOICES: Final = 25

MAX_INLINE_RATELIMIT_S: Final = 30.0
"""Longest 429 wait discord.py sleeps through inside `send`; discord.py clamps this setting to ≥ 30 s."""

TONE_COLOURS: Final[Mapping[Tone, discord.Colour]] = {
    "long": discord.Colour.brand_red(),  # longs liquidated: price fell
    "short": discord.Colour.brand_green(),  # shorts liquidated: price rose
    "neutral": discord.Colour.blurple(),
}

TRUNCATED: Final = "… (truncated)"
INTERNAL_ERROR: Final = "Something went wrong on our side; nothing was changed. The operator log has details."
STALE_COMMAND: Final = (
    "Discord sent a command in a shape this bot no longer has; its command list is being updated. "
    "Try again in a minute."
)


# --- rendering -------------------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """Cut to `limit` characters with an ellipsis: one over-long part must not cost the whole message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit_lines(text: str, limit: int) -> str:
    """Cut at a line break and say so, as the Telegram adapter does, rather than mid-word."""
    if len(text) <= limit:
        return text
    keep = limit - len(TRUNCATED) - 1
    cut = text.rfind("\n", 0, keep)
    return text[: cut if cut > 0 else keep] + "\n" + TRUNCATED


def alert_embed(alert: Alert) -> discord.Embed:
    """One embed: colour by side, the headline as the description, each field inline, within every limit."""
    description = "\n".join(
        [f"**{escape_markdown(alert.headline)}**", *(f"• {escape_markdown(item)}" for item in alert.items)]
    )
    embed = discord.Embed(
        title=clip(alert.title, MAX_TITLE),
        description=fit_lines(description, MAX_DESCRIPTION),
        colour=TONE_COLOURS[alert.tone],
        url=alert.url,
    )
    fields = list(alert.fields)
    shown = fields if len(fields) <= MAX_FIELDS else fields[: MAX_FIELDS - 1]
    for field in shown:
        # Clip before bolding so the closing ** survives.
        value = clip(escape_markdown(field.value) or "-", MAX_FIELD_VALUE - 4)
        embed.add_field(
            name=clip(field.name or "-", MAX_FIELD_NAME),
            value=f"**{value}**" if field.emphasis else value,
            inline=True,
        )
    if len(shown) < len(fields):
        embed.add_field(name="More", value=f"{len(fields) - len(shown)} more fields not shown", inline=False)
    if alert.url and len(embed.fields) < MAX_FIELDS:
        label = escape_markdown(clip(alert.link_label, 200)).replace("]", "")
        embed.add_field(name="Link", value=clip(f"[{label}]({alert.url})", MAX_FIELD_VALUE), inline=False)
    if alert.footer:
        embed.set_footer(text=clip(alert.footer, MAX_FOOTER))
    _fit_total(embed)
    return embed


def _fit_total(embed: discord.Embed) -> None:
    """The 6000-character cap counts title, description, fields and footer together: shorten the description
    (it holds the merged items, the most elastic part) and then drop trailing fields."""
    overflow = len(embed) - MAX_EMBED_TOTAL
    if overflow > 0 and embed.description:
        embed.description = fit_lines(embed.description, max(len(embed.description) - overflow, 64))
    while len(embed) > MAX_EMBED_TOTAL and embed.fields:
        embed.remove_field(-1)


def reply_text(reply: Reply) -> str:
    """Replies stay plain message text (bold title, then lines): easy to read and to copy on a phone."""
    head = [f"**{escape_markdown(reply.title)}**"] if reply.title else []
    return fit_lines("\n".join([*head, *(escape_markdown(line) for line in reply.lines)]), MAX_CONTENT)


# --- errors ----------------------------------------------------------------------------------------


def _retry_after_header(exc: discord.HTTPException, default_s: float) -> float:
    headers = getattr(exc.response, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", default_s))
    except (TypeError, ValueError):
        return default_s


def classify(exc: Exception) -> DeliveryError:
    """Map what discord.py raised on a channel send onto the dispatcher's four outcomes.

    Codes: https://discord.com/developers/docs/topics/opcodes-and-status-codes#json. Any 403 on a send means
    the bot may not post there (50013 Missing Permissions, 50001 Missing Access, 50007 DMs closed), so the
    chat is gone until someone fixes the permissions and talks to the bot again.
    """
    if isinstance(exc, discord.RateLimited):
        return RetryLater(exc.retry_after, "Discord rate limit")
    if isinstance(exc, discord.HTTPException):
        reason = f"Discord {exc.status}/{exc.code}: {exc.text or exc.response.reason}"
        if exc.status == 429:
            # discord.py retried five times, or saw a 429 without `Via` (a Cloudflare ban, about an hour).
            return RetryLater(_retry_after_header(exc, 60.0), "Discord rate limit")
        if exc.status == 401:
            return TransientFailure("Discord rejected the bot token; check DISCORD_BOT_TOKEN")
        if isinstance(exc, discord.Forbidden):
            return PermanentFailure(reason, chat_gone=True)
        if isinstance(exc, discord.NotFound):
            return PermanentFailure(reason, chat_gone=exc.code == 10003)  # Unknown Channel
        if exc.status >= 500:
            return TransientFailure(reason)
        return PermanentFailure(reason, chat_gone=False)
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return TransientFailure(f"Discord network error: {exc!r}")
    return TransientFailure(f"Discord error: {exc!r}")


# --- slash commands --------------------------------------------------------------------------------


def option_text(value: object) -> str:
    """What the Telegram parser would hand the handler: text as typed, numbers without `.0` or exponents."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    return str(value)


class ParamOption(app_commands.Transformer):
    """One `Param` as a slash-command option, through discord.py's public Transformer API.

    The option's type, choices and description come from the spec; `transform` turns whatever Discord sent
    back into the text the shared handlers parse, so validation and its messages stay in `bot.commands`.
    """

    def __init__(self, param: Param) -> None:
        self.param = param

    @property
    def type(self) -> discord.AppCommandOptionType:
        if self.param.kind == "number":
            return discord.AppCommandOptionType.number
        return discord.AppCommandOptionType.string

    @property
    def choices(self) -> list[app_commands.Choice[int | float | str]] | None:
        if not self.param.choices or len(self.param.choices) > MAX_CHOICES:
            return None  # the handler still checks the value and names the allowed ones
        return [app_commands.Choice(name=c, value=c) for c in self.param.choices]

    async def transform(self, interaction: discord.Interaction, value: Any, /) -> str:
        return option_text(value)


CommandRunner = Callable[[Command, discord.Interaction, dict[str, str]], Awaitable[None]]


def slash_command(command: Command, run: CommandRunner) -> app_commands.Command[Any, ..., None]:
    """Build the app command for one registry entry.

    discord.py reads options from the callback's signature, so the callback takes `**options` and carries a
    generated `__signature__` whose parameters are annotated with `ParamOption` transformers; `describe`
    attaches the descriptions. No private discord.py attribute is touched.
    """

    async def callback(interaction: discord.Interaction, **options: str | None) -> None:
        await run(command, interaction, {name: value for name, value in options.items() if value is not None})

    parameters = [
        inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction)
    ]
    for param in sorted(command.params, key=lambda p: not p.required):  # Discord lists required ones first
        parameters.append(
            inspect.Parameter(
                param.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=ParamOption(param),
                default=inspect.Parameter.empty if param.required else None,
            )
        )
    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    callback.__qualname__ = callback.__name__ = f"slash_{command.name}"
    descriptions = {p.name: clip(p.description or p.name, MAX_COMMAND_DESCRIPTION) for p in command.params}
    described = app_commands.describe(**descriptions)(callback)
    return app_commands.Command(
        name=command.name,
        description=clip(command.summary, MAX_COMMAND_DESCRIPTION),
        callback=described,
    )


def _canonical_option(option: Mapping[str, Any]) -> dict[str, Any]:
    canon: dict[str, Any] = {
        "type": option.get("type"),
        "name": option.get("name"),
        "description": option.get("description") or "",
        "required": bool(option.get("required", False)),
        "autocomplete": bool(option.get("autocomplete", False)),
        "choices": [{"name": c["name"], "value": c["value"]} for c in option.get("choices") or []],
        "channel_types": sorted(option.get("channel_types") or []),
        "options": [_canonical_option(o) for o in option.get("options") or []],
    }
    for key in ("min_value", "max_value", "min_length", "max_length"):
        if option.get(key) is not None:
            canon[key] = float(option[key])
    return canon


def command_fingerprint(commands: Sequence[Mapping[str, Any]]) -> list[str]:
    """The parts of each command that we set, normalised so our payload and Discord's answer compare equal.

    Discord adds ids and versions, sends the permission bitfield as a string, omits `required: false`, and
    fills `contexts`/`integration_types` with its defaults; none of those is a change we made.
    """
    out = []
    for command in commands:
        permissions = command.get("default_member_permissions")
        canon = {
            "name": command.get("name"),
            "type": command.get("type") or 1,
            "description": command.get("description") or "",
            "nsfw": bool(command.get("nsfw", False)),
            "default_member_permissions": None if permissions is None else str(permissions),
            "options": [_canonical_option(o) for o in command.get("options") or []],
        }
        out.append(json.dumps(canon, sort_keys=True))
    return sorted(out)


# --- the client ------------------------------------------------------------------------------------


class _Tree(app_commands.CommandTree):
    """The one app-command error path: whatever escaped the handler becomes an ephemeral reply and a log."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        if isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
            log.warning("stale discord command name=%s error=%s", getattr(interaction.command, "name", "?"), error)
            text = STALE_COMMAND
        else:
            name = interaction.command.name if interaction.command else "?"
            log.error("discord command failed command=%s", name, exc_info=error)
            text = INTERNAL_ERROR
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not report a command error error=%s", exc)


class _Client(discord.Client):
    def __init__(self, on_setup: Callable[[], Awaitable[None]], on_session: Callable[[], None]) -> None:
        # perpwatch never joins voice: skip discord.py's start-up warnings about missing voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # Interactions need no intent; `guilds` keeps discord.py's channel cache sane (it warns without it).
        # Message intents would only stream every message of every server to us for nothing.
        super().__init__(intents=discord.Intents(guilds=True), max_ratelimit_timeout=MAX_INLINE_RATELIMIT_S)
        self.tree = _Tree(self)
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
    ) -> None:
        """`defer_after_s`: Discord drops an interaction not answered within 3 s, so a command still running
        after this long is deferred ("thinking…") and answered by a followup; 0 defers every command."""
        self._token = token
        self.api_url = api_url.rstrip("/")
        self.gateway_url = gateway_url
        self.register_chat = register_chat
        self.make_context = make_context
        self.commands = commands
        self.ready_timeout_s = ready_timeout_s
        self.defer_after_s = defer_after_s
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
        raise PlatformStartError(f"Discord gateway at {self.gateway_url} did not start a session: {why}") from cause

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
        """PUT the command list only when it differs from what Discord has: a bulk overwrite on every start
        counts against a daily create limit and makes clients reload the bot's commands."""
        tree = self.client.tree
        app_id = self.client.application_id
        if app_id is None:  # pragma: no cover - login() always sets it
            return
        wanted = [c.to_dict(tree) for c in tree.get_commands()]
        try:
            current = await self.client.http.get_global_commands(app_id)
            if command_fingerprint(current) == command_fingerprint(wanted):
                log.info("discord commands unchanged count=%d", len(wanted))
                return
            await tree.sync()
        except discord.HTTPException as exc:
            # Alerts do not depend on the command list; keep delivering and say what failed.
            log.error("discord command sync failed status=%s code=%s error=%s", exc.status, exc.code, exc.text)
            return
        log.info("discord commands synced count=%d", len(wanted))

    # --- delivery -----------------------------------------------------------------------------------
    async def send(self, chat: Chat, alert: Alert) -> str | None:
        # A partial channel needs no cache hit: DMs and channels of servers still streaming in work alike.
        channel = self.client.get_partial_messageable(int(chat.platform_chat_id))
        try:
            message = await channel.send(embed=alert_embed(alert), allowed_mentions=discord.AllowedMentions.none())
        except (discord.DiscordException, aiohttp.ClientError, TimeoutError) as exc:
            raise classify(exc) from exc
        return str(message.id)

    # --- commands -----------------------------------------------------------------------------------
    async def _run_command(self, command: Command, interaction: discord.Interaction, args: dict[str, str]) -> None:
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
        text = reply_text(reply)
        mentions = discord.AllowedMentions.none()
        try:
            if deferred:  # the first followup replaces the "thinking…" message; it keeps the defer's visibility
                await interaction.followup.send(text, ephemeral=not reply.ok, allowed_mentions=mentions)
            else:
                await interaction.response.send_message(text, ephemeral=not reply.ok, allowed_mentions=mentions)
        except discord.HTTPException as exc:
            log.warning("could not answer command command=%s chat=%d error=%s", command.name, chat.id, exc)


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
