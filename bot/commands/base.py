"""The platform-neutral command model: a spec, a context, a reply, and one runner that checks access.

Telegram and Discord adapters only map their updates onto `Context` and draw the `Reply`; parameters are
declared once here, so Telegram parses `/subscribe liquidation venue=binance` and Discord builds a slash
command with the same options from the same spec. A command therefore exists on both platforms or neither.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from bot.render import Reply
from storage.models import Chat

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)


class Access(StrEnum):
    ANYONE = "anyone"
    CHAT_ADMIN = "chat admins"  # in groups; anyone in a private chat
    OPERATOR = "operators"  # ids in PERPWATCH_ADMIN_IDS, anywhere


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    required: bool = False
    positional: bool = True
    kind: Literal["text", "number"] = "text"
    choices: tuple[str, ...] = ()

    def usage(self) -> str:
        shown = self.name if self.positional else f"{self.name}=…"
        return f"<{shown}>" if self.required else f"[{shown}]"


class CommandError(Exception):
    """A user-facing refusal; the runner replies with the message (and usage) and nothing changes."""

    def __init__(self, message: str, *, show_usage: bool = False) -> None:
        super().__init__(message)
        self.show_usage = show_usage


@dataclass(frozen=True)
class Context:
    platform: str
    chat: Chat
    user_id: str
    args: Mapping[str, str]
    is_chat_admin: Callable[[], Awaitable[bool]]
    services: Services


Handler = Callable[[Context], Awaitable[Reply]]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    handler: Handler
    params: tuple[Param, ...] = ()
    access: Access = Access.ANYONE
    aliases: tuple[str, ...] = field(default=())
    details: Callable[[], str] | None = None
    """More for /help's line, worked out when /help is asked (e.g. the known wallet names /watch takes)."""

    @property
    def usage(self) -> str:
        return " ".join([f"/{self.name}", *(p.usage() for p in self.params)])


def parse_text_args(command: Command, tokens: Sequence[str]) -> dict[str, str]:
    """Map chat text (`BTC min=100k`) onto the command's params: positionals in order, `key=value` by name."""
    by_name = {p.name: p for p in command.params}
    positionals = [p for p in command.params if p.positional]
    args: dict[str, str] = {}
    loose: list[str] = []
    for token in tokens:
        key, sep, value = token.partition("=")
        if sep and key.lower() in by_name:
            if not value:
                raise CommandError(f"{key}= needs a value", show_usage=True)
            args[key.lower()] = value
        elif sep:
            known = ", ".join(p.name for p in command.params if not p.positional) or "none"
            raise CommandError(f"unknown option {key!r}; options: {known}", show_usage=True)
        else:
            loose.append(token)
    free = [p for p in positionals if p.name not in args]
    if len(loose) > len(free):
        raise CommandError(f"too many arguments: {' '.join(loose[len(free) :])!r}", show_usage=True)
    for param, token in zip(free, loose, strict=False):
        args[param.name] = token
    for param in command.params:
        if param.required and param.name not in args:
            raise CommandError(f"missing {param.name}", show_usage=True)
    return args


async def run_command(command: Command, ctx: Context) -> Reply:
    """The one gate every command passes on every platform: access, then the handler, then error mapping."""
    refusal = await _refuse(command, ctx)
    if refusal is not None:
        return Reply.of(refusal, ok=False)
    try:
        return await command.handler(ctx)
    except CommandError as exc:
        lines = [str(exc)]
        if exc.show_usage:
            lines.append(f"Usage: {command.usage}")
        return Reply.of(*lines, ok=False)
    except Exception:
        log.exception("command failed command=%s platform=%s chat=%d", command.name, ctx.platform, ctx.chat.id)
        return Reply.of(
            "Something went wrong on our side; nothing was changed. The operator log has details.", ok=False
        )


async def _refuse(command: Command, ctx: Context) -> str | None:
    if command.access is Access.OPERATOR and not ctx.services.settings.is_operator(ctx.platform, ctx.user_id):
        return f"/{command.name} is an operator command: only ids in PERPWATCH_ADMIN_IDS may use it."
    if command.access is Access.CHAT_ADMIN and ctx.chat.is_group:
        try:
            admin = await ctx.is_chat_admin()
        except Exception as exc:  # the platform's API failed (Telegram getChatMember): say so, change nothing
            log.warning("admin check failed command=%s platform=%s error=%r", command.name, ctx.platform, exc)
            return f"Could not check your admin rights in this chat just now; /{command.name} changed nothing."
        if not admin:
            where = "server (Manage Server or Administrator)" if ctx.platform == "discord" else "group"
            return f"Only admins of this {where} can change its alerts; /{command.name} changed nothing."
    return None
