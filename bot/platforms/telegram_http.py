"""python-telegram-bot's transport on aiohttp instead of httpx.

PTB keeps doing everything that matters (encoding parameters, mapping statuses to exceptions, parsing
results); only the bytes move through aiohttp. Measured with `bench/pipeline.py`: httpx's connection pool
cost about 2 ms of CPU per sendMessage with ten requests in flight, which capped one core at a few hundred
alerts a second; aiohttp, which the watchers already use, costs a fraction of that.

It also tells apart a request that never left from one whose answer never came: a connect timeout or a
refused connection is a plain `NetworkError`/`TimedOut`, while a read timeout or a connection dropped after the
body was written is `AnswerTimedOut`/`AnswerLost`, because Telegram may have shown that message.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

_TOKEN_IN_PATH = re.compile(r"/bot[^/\s'\"]+")


class AnswerTimedOut(TimedOut):
    """The request was sent and no answer came in time: Telegram may have taken it."""


class AnswerLost(NetworkError):
    """The connection closed after the request was sent and before an answer: Telegram may have taken it."""


def without_token(text: str) -> str:
    """`…/bot123:ABC/getMe` → `…/bot***/getMe`."""
    return _TOKEN_IN_PATH.sub("/bot***", text)


class AiohttpRequest(BaseRequest):
    def __init__(
        self,
        *,
        pool_size: int = 32,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        write_timeout_s: float = 5.0,
        media_write_timeout_s: float = 20.0,
    ) -> None:
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self.media_write_timeout_s = media_write_timeout_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout_s

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None:
            raise RuntimeError("AiohttpRequest is not initialized")
        files = request_data.multipart_data if request_data else None
        fields = request_data.json_parameters if request_data else None
        read_s = self._read_timeout_s if isinstance(read_timeout, DefaultValue) else read_timeout
        connect_s = self.connect_timeout_s if isinstance(connect_timeout, DefaultValue) else connect_timeout
        write_s = self.media_write_timeout_s if files else self.write_timeout_s
        if not isinstance(write_timeout, DefaultValue) and write_timeout is not None:
            write_s = write_timeout
        total = None if read_s is None else read_s + (write_s or 0) + (connect_s or 0)
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect_s, sock_read=read_s)
        body: aiohttp.FormData | dict[str, str] | None = fields
        if files:
            form = aiohttp.FormData()
            for name, value in (fields or {}).items():
                form.add_field(name, value)
            for name, part in files.items():
                filename, content, mimetype = part if len(part) == 3 else (part[0], part[1], None)
                form.add_field(name, content, filename=filename, content_type=mimetype)
            body = form
        try:
            async with self._session.request(method, url, data=body, timeout=timeout) as response:
                return response.status, await response.read()
        except aiohttp.ConnectionTimeoutError:
            raise TimedOut("timed out connecting to the Bot API") from None
        except TimeoutError:
            raise AnswerTimedOut(f"no answer within {read_s}s of sending") from None
        except asyncio.CancelledError:
            raise
        except aiohttp.ServerDisconnectedError as exc:
            raise AnswerLost(f"aiohttp.{type(exc).__name__}: {without_token(str(exc))}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            # aiohttp puts the request URL in some messages, and the URL holds the bot token.
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {without_token(str(exc))}") from None
