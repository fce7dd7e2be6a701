"""A platform that keeps what it was given, on the test's clock: for the dispatcher's own tests.

It implements our delivery contract (not a library's), so pacing, batching and holds can be measured on a
frozen clock; the end-to-end tests drive python-telegram-bot and discord.py against the wire fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from bot.platforms.delivery import Limits, Message, MessageRef, Platform, Rate
from bot.render import Alert
from perpwatch.clock import Clock
from storage.models import Chat


@dataclass(frozen=True)
class Sent:
    at: float
    chat: str
    message: Message
    nonce: str
    edit_of: str | None = None


class RecordingPlatform(Platform):
    name: ClassVar[str] = "telegram"
    limits: ClassVar[Limits] = Limits(per_chat=Rate(1, 1.0), per_group=Rate(1, 3.0), overall=Rate(30, 1.0))

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[Sent] = []
        self.fail: Callable[[Sent], Exception | None] = lambda _sent: None
        self._ids = 0

    def _record(self, chat: Chat, message: Message, nonce: str, edit_of: str | None = None) -> None:
        entry = Sent(self.clock.monotonic(), chat.platform_chat_id, message, nonce, edit_of)
        error = self.fail(entry)
        if error is not None:
            raise error
        self.sent.append(entry)

    async def send(self, chat: Chat, message: Message, *, nonce: str, reply_to: str | None = None) -> MessageRef:
        self._record(chat, message, nonce)
        self._ids += 1
        return MessageRef(ids=(str(self._ids),))

    async def edit(self, chat: Chat, ref: MessageRef, alert: Alert) -> MessageRef:
        self._record(chat, alert, "", edit_of=ref.primary)
        return ref
