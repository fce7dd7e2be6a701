"""The chat front-end contract: how a chat platform registers chats, builds command contexts and answers.

Apart from the delivery contract (`delivery.py`): a platform that only delivers (the console) needs none of
this. Answers go through the dispatcher (`ReplySender`), so a reply obeys the chat's pacing and holds like
an alert, and a 429 on a reply holds the chat's alerts too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.render import Reply
from storage.models import Chat

if TYPE_CHECKING:
    from bot.commands import Context

ChatRegistrar = Callable[[str, str, str, str | None], Awaitable[Chat]]
"""(platform, platform chat id, kind, title) → the stored chat: how a chat platform registers first contact."""

ContextFactory = Callable[[str, Chat, str, dict[str, str], Callable[[], Awaitable[bool]]], "Context"]
"""(platform, chat, user id, args, is-chat-admin check) → a command context, built by the app."""

ReplySender = Callable[[Chat, Reply, str | None], Awaitable[None]]
"""(chat, reply, the command's message id to answer) → queued behind the chat's pacing; never lost to a 429."""
