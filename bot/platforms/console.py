"""The console sink: with no chat token configured, alerts print here so a fresh clone shows them at once.

jsonl lines carry figures as plain decimals, never in exponent form (`1E+3`), so a reader that parses them
as text gets what the alert showed.
"""

from __future__ import annotations

import itertools
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import ClassVar, Literal, TextIO

from bot.platforms.delivery import MessageRef, Platform
from bot.render import Alert, Image, Reply, plain_text
from storage.models import Chat

CONSOLE_CHAT_ID = "stdout"


def _plain_decimal(value: object) -> object:
    """`json.dumps` default: a Decimal as its positional digits, whatever its exponent."""
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class ConsolePlatform(Platform):
    name: ClassVar[str] = "console"
    text_limit: ClassVar[int] = sys.maxsize  # a terminal takes any length: nothing is split
    caption_limit: ClassVar[int] = sys.maxsize

    def __init__(
        self,
        *,
        fmt: Literal["text", "jsonl"] = "text",
        stream: TextIO | None = None,
        image_dir: Path | None = None,
    ) -> None:
        """`image_dir`: where attached PNGs are saved (`<message id>-<filename>`); without it an image is
        only mentioned."""
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.image_dir = image_dir
        self._ids = itertools.count(1)

    async def send(self, chat: Chat, message: Alert | Reply, *, nonce: str, reply_to: str | None = None) -> MessageRef:
        message_id = str(next(self._ids))
        text = plain_text(message) if isinstance(message, Alert) else message.plain()
        data = dict(message.data) if isinstance(message, Alert) else {}
        self._write(text, data, message_id=message_id, image=message.image)
        return MessageRef((message_id,))

    async def edit(self, chat: Chat, ref: MessageRef, alert: Alert) -> MessageRef:
        """A terminal cannot rewrite a line it printed: the revision prints as an update of message N."""
        self._write(plain_text(alert), dict(alert.data), message_id=ref.primary, image=None, update=True)
        return ref

    def _write(
        self,
        text: str,
        data: dict[str, str | None],
        *,
        message_id: str,
        image: Image | None,
        update: bool = False,
    ) -> None:
        saved = self._save(message_id, image) if image is not None else None
        if self.fmt == "jsonl":
            record: dict[str, object] = {**data, "text": text, "message": message_id}
            if update:
                record["update_of"] = message_id
            if image is not None:
                record["image_bytes"] = len(image.png)
                if saved is not None:
                    record["image_path"] = str(saved)
            line = json.dumps(record, ensure_ascii=False, default=_plain_decimal)
        else:
            lines = [f"(update of message {message_id}) {text}" if update else text]
            if image is not None:
                where = f", saved to {saved}" if saved is not None else ""
                lines.append(f"  [image {image.filename}: {len(image.png)} bytes attached{where}]")
            line = "\n".join(lines) + "\n"
        self.stream.write(line + "\n")
        self.stream.flush()

    def _save(self, message_id: str, image: Image) -> Path | None:
        if self.image_dir is None:
            return None
        self.image_dir.mkdir(parents=True, exist_ok=True)
        path = self.image_dir / f"{message_id}-{Path(image.filename).name}"
        path.write_bytes(image.png)
        return path
