"""One request asked by a chat (`/whale`), outside any poll: from the host's budget, never waiting long for it,
every way it can fail worded for the chat (`AccountUnavailable`), the host paused on a rate limit as the
pollers pause it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp

from perpwatch.accounts import AccountUnavailable
from watchers.poller import (
    PAUSE_DEFAULT_S,
    HostBudget,
    HttpStatusError,
    Request,
    SessionSource,
    retry_after_s,
    session_of,
)

LOOKUP_WAIT_S = 10.0
"""How long a lookup waits for the host's budget before saying the venue is busy."""


async def fetch_now(source: SessionSource | None, budget: HostBudget, request: Request, venue: str) -> Any:
    """The decoded body (decimals as `Decimal`). A status other than 200 (and not a rate limit) raises
    `HttpStatusError`, for the caller to read as "no such account" where its venue answers so."""
    async with session_of(source) as session:
        try:
            async with asyncio.timeout(LOOKUP_WAIT_S):
                await budget.acquire(request.weight)
                async with session.request(
                    request.method, request.url, params=request.params, json=request.json_body
                ) as response:
                    status, text = response.status, await response.text()
                    retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            raise AccountUnavailable(f"{venue}'s request budget is in use; try again in a minute") from None
        except aiohttp.ClientError as exc:
            raise AccountUnavailable(f"{venue} could not be reached ({type(exc).__name__})") from None
    if status in PAUSE_DEFAULT_S:  # as the pollers pause it: for the venue's Retry-After, else the default
        said = retry_after_s(retry_after, datetime.now(UTC))
        budget.pause(said if said is not None else PAUSE_DEFAULT_S[status])
        raise AccountUnavailable(f"{venue} is limiting requests now; try again in a minute")
    if status != 200:
        raise HttpStatusError(status, request.url, text)
    return json.loads(text, parse_float=Decimal)
