"""What a platform is to the dispatcher: limits as class data, one `send`, and four ways to fail.

A platform only renders and sends. Deciding when to retry, park, merge or wait is the dispatcher's job;
the platform's job is to classify what its API said into one of the errors below.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from bot.render import Alert
from storage.models import Chat

if TYPE_CHECKING:
    from bot.commands import Context

ChatRegistrar = Callable[[str, str, str, str | None], Awaitable[Chat]]
"""(platform, platform chat id, kind, title) → the stored chat: how a chat platform registers first contact."""

ContextFactory = Callable[[str, Chat, str, dict[str, str], Callable[[], Awaitable[bool]]], "Context"]
"""(platform, chat, user id, args, is-chat-admin check) → a command context, built by the app."""


@dataclass(frozen=True)
class Rate:
    count: int
    period_s: float


@dataclass(frozen=True)
class Limits:
    """Published flood limits. `None` means the platform imposes none we must pace for."""

    per_chat: Rate | None = None
    per_group: Rate | None = None
    overall: Rate | None = None

    def per_minute(self, *, group: bool) -> float:
        """How many messages one chat can receive in a minute: sets when a backlog is merged."""
        rates = [r for r in (self.per_chat, self.per_group if group else None, self.overall) if r]
        if not rates:
            return float("inf")
        return min(r.count * 60.0 / r.period_s for r in rates)


class PlatformStartError(RuntimeError):
    """A platform cannot start (bad token, unreachable API): one line for the operator, never the token."""


class DeliveryError(Exception):
    """The platform did not take the message."""


class RetryLater(DeliveryError):
    """Flood control: the platform told us how long to wait (Telegram `retry_after`, Discord 429)."""

    def __init__(self, after_s: float, detail: str = "rate limited") -> None:
        super().__init__(f"{detail}; retry after {after_s:g}s")
        self.after_s = after_s


class TransientFailure(DeliveryError):
    """A network fault or 5xx: worth retrying with backoff."""


class PermanentFailure(DeliveryError):
    """Retrying cannot help: park with this reason.

    `chat_gone` when the chat itself is unreachable (blocked, kicked, deleted, no permission), so every
    pending alert of the chat is parked and no more are queued; otherwise only this message was refused.
    """

    def __init__(self, reason: str, *, chat_gone: bool = True) -> None:
        super().__init__(reason)
        self.chat_gone = chat_gone


class ChatMoved(DeliveryError):
    """Telegram upgraded a group to a supergroup; send again to `new_chat_id`."""

    def __init__(self, new_chat_id: str) -> None:
        super().__init__(f"chat moved to {new_chat_id}")
        self.new_chat_id = new_chat_id


class Platform(abc.ABC):
    name: ClassVar[str]
    limits: ClassVar[Limits] = Limits()

    async def start(self) -> None:  # noqa: B027 - optional hook; the console needs none
        """Connect; for chat platforms also start taking commands."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Disconnect; idempotent."""

    @abc.abstractmethod
    async def send(self, chat: Chat, alert: Alert) -> str | None:
        """Deliver one alert; return the platform's message id (kept so a later update can edit it)."""
