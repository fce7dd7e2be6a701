"""A loopback Bot API that judges Telegram's published flood limits strictly, in its own process.

    python -m bench.strict_bot_api TOKEN LATENCY_S   → prints "API_URL VENUE_URL CONTROL_URL" once listening

The same venue, push control and records as `bench.fake_bot_api`, with one difference: every message a
bot sends (sendMessage, sendPhoto, editMessageText, editMessageCaption) is judged on arrival, on this
process's monotonic clock, against sliding windows of the messages accepted before it
(https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this):

- a chat: no more than 1 message in any 1 s window;
- a group or supergroup (a negative chat id): no more than 20 in any 60 s window;
- the bot overall: no more than 30 in any 1 s window.

A message that would break one is answered, after the same latency as any other, with 429 and a
`retry_after` (whole seconds, as Telegram gives it) until the window would admit it, and is not counted.
Real Telegram is more lenient in places (short bursts often pass); this judge never is, so a bot that
passes it keeps the letter of the FAQ. `records` adds a "report" with every refusal.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import deque
from typing import Any, Final

from aiohttp import web

from bench.fake_bot_api import serve
from tests.fakes.telegram_api import FakeTelegramApi, JsonDict, _ApiError

MESSAGE_METHODS: Final = frozenset({"sendmessage", "sendphoto", "editmessagetext", "editmessagecaption"})
PER_CHAT: Final = (1, 1.0)
PER_GROUP: Final = (20, 60.0)
OVERALL: Final = (30, 1.0)


class StrictTelegramApi(FakeTelegramApi):
    """`FakeTelegramApi` whose send methods answer 429 when a message would break a flood limit."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self._by_chat: dict[int, deque[float]] = {}
        self._overall: deque[float] = deque()
        self.refused: list[dict[str, Any]] = []

    def judge(self, chat_id: int, now: float) -> tuple[str, float] | None:
        """The first limit a message arriving `now` would break, with the seconds until it would not."""
        chat_log = self._by_chat.setdefault(chat_id, deque())
        while chat_log and chat_log[0] <= now - PER_GROUP[1]:
            chat_log.popleft()
        while self._overall and self._overall[0] <= now - OVERALL[1]:
            self._overall.popleft()
        rules = [("chat 1/1s", chat_log, PER_CHAT), ("overall 30/1s", self._overall, OVERALL)]
        if chat_id < 0:
            rules.insert(1, ("group 20/60s", chat_log, PER_GROUP))
        for name, times, (count, period) in rules:
            inside = [t for t in times if t > now - period]
            if len(inside) >= count:
                return name, inside[-count] + period - now
        return None

    async def _before_send(self, request: web.Request, method: str, params: JsonDict) -> int:
        chat_id = params.get("chat_id")
        if method.lower() in MESSAGE_METHODS and isinstance(chat_id, int) and not isinstance(chat_id, bool):
            now = time.monotonic()
            broken = self.judge(chat_id, now)
            if broken is not None:
                rule, wait_s = broken
                retry_after = max(1, math.ceil(wait_s))
                self.refused.append({"chat_id": chat_id, "at": now, "rule": rule, "retry_after": retry_after})
                if self.latency_s > 0:
                    await asyncio.sleep(self.latency_s)
                raise _ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})
            self._by_chat[chat_id].append(now)
            self._overall.append(now)
        return await super()._before_send(request, method, params)


def report(api: FakeTelegramApi) -> Any:
    return {"refused": api.refused if isinstance(api, StrictTelegramApi) else []}


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], float(sys.argv[2]), make_api=StrictTelegramApi, report=report))
