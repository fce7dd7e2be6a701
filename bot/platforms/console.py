"""The console sink: with no chat token configured, alerts print here so a fresh clone shows them at once."""

from __future__ import annotations

import json
import sys
from typing import ClassVar, Literal, TextIO

from bot.platforms.base import Platform
from bot.render import Alert, plain_text
from storage.models import Chat

CONSOLE_CHAT_ID = "stdout"


class ConsolePlatform(Platform):
    name: ClassVar[str] = "console"

    def __init__(self, *, fmt: Literal["text", "jsonl"] = "text", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.sent = 0

    async def send(self, chat: Chat, alert: Alert) -> str | None:
        text = plain_text(alert)
        if self.fmt == "jsonl":
            line = json.dumps({**alert.data, "text": text}, ensure_ascii=False)
        else:
            line = text + "\n"
        self.stream.write(line + "\n")
        self.stream.flush()
        self.sent += 1
        return str(self.sent)
