"""Logging set-up. Tokens are secrets: they are masked in every record, whichever library logs them.

httpx logs each request URL at INFO, and a Telegram URL holds the bot token, so httpx is held at WARNING;
the redacting filter is the second line of defence for anything else that might echo a token.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable


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


def setup_logging(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp.access", "telegram.ext.Updater", "discord.gateway", "discord.client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # While PostgreSQL is away asyncpg's pool logs a traceback for every reconnect it tries; the bot says
    # once that storage is unavailable, and again while it stays so (bot/dispatch/outage.py).
    logging.getLogger("asyncpg.pool").setLevel(max(logging.ERROR, root.level))
