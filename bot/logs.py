"""Logging set-up. Tokens are secrets: they are masked in every record, whichever library logs them.

Two formats with the same fields (time, level, logger, message, and the traceback when there is one): text
for a terminal, JSON lines for a log shipper, which would otherwise have to split a traceback's lines back
into one record. The mask runs on the record before either formatter sees it, so both print the same.

httpx logs each request URL at INFO, and a Telegram URL holds the bot token, so httpx is held at WARNING;
the redacting filter is the second line of defence for anything else that might echo a token.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import Literal, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: the text format's fields under names a shipper indexes."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # set by RedactSecrets when it masked a traceback
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for secret in self.secrets:
                    message = message.replace(secret, "***")
                record.msg, record.args = message, None
            if record.exc_info and record.exc_info[1] is not None:
                text = logging.Formatter().formatException(record.exc_info)
                if any(s in text for s in self.secrets):
                    for secret in self.secrets:
                        text = text.replace(secret, "***")
                    record.exc_info = None
                    record.exc_text = text
        return True


def make_handler(
    stream: TextIO | None = None, secrets: Iterable[str] = (), fmt: Literal["text", "json"] = "text"
) -> logging.Handler:
    """The bot's one log handler: the chosen format, with every secret masked."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    return handler


def setup_logging(level: str, secrets: Iterable[str] = (), fmt: Literal["text", "json"] = "text") -> None:
    handler = make_handler(secrets=secrets, fmt=fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp.access", "telegram.ext.Updater", "discord.gateway", "discord.client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # While PostgreSQL is away asyncpg's pool logs a traceback for every reconnect it tries; the bot says
    # once that storage is unavailable, and again while it stays so (bot/dispatch/outage.py).
    logging.getLogger("asyncpg.pool").setLevel(max(logging.ERROR, root.level))
