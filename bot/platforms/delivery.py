"""The delivery contract: what a platform is to the dispatcher. Limits as class data, send, edit, and the
ways a delivery can fail.

A platform only renders and sends. Deciding when to retry, park, merge, edit or wait is the dispatcher's
job; the platform's job is to draw a neutral `Alert` or `Reply` in its markup, within its limits, and to
classify what its API said into one of the errors below. The chat front end (commands, contexts) is a
separate contract, `bot/platforms/frontend.py`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from bot.render import Alert, Reply
from storage.models import Chat

Message = Alert | Reply


@dataclass(frozen=True)
class Rate:
    """At most `count` messages in any window of `period_s` seconds."""

    count: int
    period_s: float

    @property
    def interval_s(self) -> float:
        return self.period_s / self.count


@dataclass(frozen=True)
class Limits:
    """Published flood limits. `None` means the platform imposes none we must pace for."""

    per_chat: Rate | None = None
    per_group: Rate | None = None
    overall: Rate | None = None

    def rates_for(self, *, group: bool) -> tuple[Rate, ...]:
        return tuple(r for r in (self.per_chat, self.per_group if group else None) if r is not None)


@dataclass(frozen=True)
class MessageRef:
    """Where a sent message lives on its platform, so a later revision of its thread can edit it.

    `ids` holds one platform message id per part (a long reply is split); an edit targets the first.
    Stored as text (`dump`/`load`), never as a platform's own object.
    """

    ids: tuple[str, ...]

    @property
    def primary(self) -> str:
        return self.ids[0]

    def dump(self) -> str:
        return ",".join(self.ids)

    @classmethod
    def load(cls, text: str) -> MessageRef:
        ids = tuple(part for part in text.split(",") if part)
        if not ids:
            raise ValueError("empty message reference")
        return cls(ids=ids)


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
    """A network fault or 5xx: worth retrying with backoff.

    `maybe_delivered` when the request left but no answer came (a read timeout, a dropped connection after
    the body was written): the platform may have shown the message, and a retry may show it twice. The
    dispatcher says so in the log when it retries such a send.
    """

    def __init__(self, reason: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(reason)
        self.maybe_delivered = maybe_delivered


class PermanentFailure(DeliveryError):
    """Retrying cannot help: park with this reason.

    `chat_gone` when the chat itself is unreachable (blocked, kicked, deleted, no permission), so every
    pending alert of the chat is parked and no more are queued; otherwise only this message was refused.
    """

    def __init__(self, reason: str, *, chat_gone: bool = True) -> None:
        super().__init__(reason)
        self.chat_gone = chat_gone


class Unauthorized(DeliveryError):
    """The platform refused our token (revoked or changed mid-run). Nothing can be sent on this platform
    until an operator fixes `setting`; deliveries stay pending meanwhile."""

    def __init__(self, setting: str, detail: str = "the platform rejected the bot token") -> None:
        super().__init__(f"{detail}; check {setting}")
        self.setting = setting


class ChatMoved(DeliveryError):
    """Telegram upgraded a group to a supergroup; send again to `new_chat_id`."""

    def __init__(self, new_chat_id: str) -> None:
        super().__init__(f"chat moved to {new_chat_id}")
        self.new_chat_id = new_chat_id


class MessageGone(DeliveryError):
    """The message an edit targets no longer exists (deleted by an admin): send the revision anew."""


class Platform(abc.ABC):
    """One chat platform as the dispatcher sees it.

    `text_limit` is the most characters one message's text may have once drawn in the platform's markup,
    `caption_limit` the same for an image's caption; a reply longer than that is split into several
    messages (`bot/text.py`), never cut.
    """

    name: ClassVar[str]
    limits: ClassVar[Limits] = Limits()
    text_limit: ClassVar[int] = 4096
    caption_limit: ClassVar[int] = 1024

    async def start(self) -> None:  # noqa: B027 - optional hook; the console needs none
        """Connect; for chat platforms also start taking commands."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Disconnect; idempotent."""

    @abc.abstractmethod
    async def send(self, chat: Chat, message: Message, *, nonce: str, reply_to: str | None = None) -> MessageRef:
        """Deliver one alert or reply (with its image, if any) as one or more messages.

        `nonce` is stable for one delivery across retries and restarts: a platform that deduplicates on it
        (Discord's `enforce_nonce`) never shows a resend twice. `reply_to` threads a command's answer under
        the command where the platform can.
        """

    @abc.abstractmethod
    async def edit(self, chat: Chat, ref: MessageRef, alert: Alert) -> MessageRef:
        """Replace the text of a sent alert with a newer revision. "Not modified" counts as done; a message
        that is gone raises `MessageGone`, and the dispatcher sends the revision anew."""
