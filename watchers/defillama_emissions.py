"""Model unlock schedules from DefiLlama's emissions dataset, as `model` calendar entries.

Source (research §1.1): the free dataset host DefiLlama's own site reads, `GET {base}/emissions/{slug}`
(default base `https://defillama-datasets.llama.fi`, `PERPWATCH_DEFILLAMA_DATASETS_URL`). It is
undocumented, so everything about it is best effort: the stored object is plain JSON there, while the Pro
API's `/emission/{slug}` wraps the same object in a string (`{"body": "<JSON>", "lastModified": …}`); both
are read. The object must have a `name` and one of `metadata`, `documentedData`, `realTimeData` (the app's
own check). Future cliffs come from `metadata.events[]` with `unlockType: "cliff"` (timestamp in unix
seconds, `noOfTokens[0]` the amount; for a linear event `noOfTokens` are weekly rates, which are no dated
amount and are skipped).

Why a watcher that writes its durable state instead of the calendar: watchers never import the bot or
storage. The last good schedule is kept under `entries` in its state; the calendar service merges it when
it changes. A 402, a 404 or a malformed body writes nothing, so the bundled calendar and the last good
model stay in force, and the failure shows in /status as this watcher's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from perpwatch.calendar import CalendarEntry, EventType, Figure, Precision, Status, period_start
from watchers.base import EventSink, Watcher, WatcherState
from watchers.poller import HttpStatusError, OwnedPoller, PollTuning, Request, RestPoller
from watchers.runtime import WatcherContext

NAME = "defillama_emissions"
DATASETS_URL = "https://defillama-datasets.llama.fi"
HORIZON = timedelta(days=180)
"""Cliffs this far ahead become entries: the calendar lists and reminds of the coming months, not years."""
MAX_PER_SLUG = 40


class EmissionsSettings(Protocol):
    @property
    def defillama_datasets_url(self) -> str: ...

    @property
    def defillama_slugs(self) -> Sequence[str]: ...

    @property
    def defillama_poll_s(self) -> float: ...


class MalformedEmissions(ValueError):
    """The body is not an emissions object: nothing of it is used."""


def unwrap(body: Any) -> dict[str, Any]:
    """The emissions object from either shape: the dataset host's plain object, or the Pro API's string-
    wrapped `{"body": "<JSON string>"}`."""
    if isinstance(body, dict) and isinstance(body.get("body"), str):
        try:
            body = json.loads(body["body"], parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise MalformedEmissions(f"body is a string but not JSON: {exc.msg}") from None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise MalformedEmissions("not an emissions object (no name)")
    if not any(key in body for key in ("metadata", "documentedData", "realTimeData")):
        raise MalformedEmissions("not an emissions object (no metadata, documentedData or realTimeData)")
    return body


def _decimal(raw: Any) -> Decimal | None:
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal | str):
        return None
    try:
        value = Decimal(str(raw))
    except ArithmeticError:
        return None
    return value if value.is_finite() and value > 0 else None


def parse(body: Any, slug: str, *, source_url: str, now: datetime) -> list[CalendarEntry]:
    """Future cliffs of one protocol as `model` entries, soonest first. Raises MalformedEmissions."""
    data = unwrap(body)
    raw_metadata = data.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    token = metadata.get("token") if isinstance(metadata.get("token"), str) else None
    gecko = data.get("gecko_id") if isinstance(data.get("gecko_id"), str) else None
    if gecko is None and token and token.startswith("coingecko:"):
        gecko = token.removeprefix("coingecko:")
    if gecko is None or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,79}", gecko):
        raise MalformedEmissions("no CoinGecko id (gecko_id or metadata.token): a token needs a key, not a name")
    total = _decimal(metadata.get("total"))
    supply = data.get("supplyMetrics")
    if total is None and isinstance(supply, dict):
        total = _decimal(supply.get("maxSupply"))
    events = metadata.get("events")
    if not isinstance(events, list):
        raise MalformedEmissions("metadata.events is not a list")
    today = now.date().isoformat()
    entries: list[CalendarEntry] = []
    for item in events:
        if not isinstance(item, dict) or item.get("unlockType") != "cliff":
            continue
        stamp, tokens = item.get("timestamp"), item.get("noOfTokens")
        if (
            isinstance(stamp, bool)
            or not isinstance(stamp, int | Decimal)
            or not isinstance(tokens, list)
            or not tokens
        ):
            continue
        when = datetime.fromtimestamp(int(stamp), tz=UTC)
        amount = _decimal(tokens[0])
        if amount is None or not now <= when <= now + HORIZON:
            continue
        category = str(item.get("category") or "uncategorized")
        section = re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-") or "uncategorized"
        day = period_start(when, Precision.DAY)
        description = item.get("description")
        entries.append(
            CalendarEntry(
                id=f"defillama:{slug}:{day:%Y-%m-%d}:{section}"[:120],
                project=str(data["name"])[:60],
                coingecko_id=gecko,
                event_type=EventType.UNLOCK,
                starts_at=day,
                precision=Precision.DAY,
                amount_tokens=amount,
                total_supply=total,
                status=Status.ANNOUNCED,
                figure=Figure.MODEL,
                source_url=source_url,
                retrieved_at=datetime.fromisoformat(today).date(),
                title=f"{category} cliff (DefiLlama model)"[:120],
                note=(str(description)[:500] if isinstance(description, str) else None),
            )
        )
    entries.sort(key=lambda e: (e.starts_at, e.id))
    return entries[:MAX_PER_SLUG]


class DefiLlamaEmissionsWatcher(Watcher):
    def __init__(self, settings: EmissionsSettings, ctx: WatcherContext) -> None:
        super().__init__(ctx.name, frozenset(), clock=ctx.clock)
        self.base = settings.defillama_datasets_url.rstrip("/")
        self.slugs = tuple(settings.defillama_slugs)
        self.poll_s = settings.defillama_poll_s
        self.ctx = ctx
        ctx.budgets.declare(self.base, 30)
        self.health.note = (
            "Model unlock cliffs (figure: model) for "
            + (", ".join(self.slugs) or "no slugs")
            + "; on failure the bundled calendar stays in force"
        )

    async def refresh(self, poller: RestPoller) -> None:
        """Every slug or none: a partial refresh would leave some tokens' model older than others' without
        saying so. The first failure fails the round (the error shows in /status)."""
        now = self.clock.now()
        entries: list[CalendarEntry] = []
        for slug in self.slugs:
            url = f"{self.base}/emissions/{slug}"
            try:
                body = await poller.get_json(Request(url))
            except HttpStatusError as exc:
                hint = " (a paid plan only?)" if exc.status == 402 else " (unknown slug?)" if exc.status == 404 else ""
                raise HttpStatusError(exc.status, url, f"emissions {slug}{hint}; bundled calendar in force") from None
            except json.JSONDecodeError:
                raise MalformedEmissions(f"emissions {slug}: not JSON; bundled calendar in force") from None
            try:
                entries += parse(body, slug, source_url=url, now=now)
            except MalformedEmissions as exc:
                raise MalformedEmissions(f"emissions {slug}: {exc}; bundled calendar in force") from None
        await self.ctx.state.put(
            "entries",
            {"fetched_at": now.isoformat(), "entries": [e.model_dump(mode="json") for e in entries]},
        )
        self.health.events = len(entries)
        self.health.extra["model cliffs"] = str(len(entries))

    async def run(self, sink: EventSink) -> None:
        if not self.slugs:
            self.health.state = WatcherState.UNSUPPORTED
            self.health.last_error = "no slugs configured (PERPWATCH_DEFILLAMA_SLUGS)"
            await asyncio.Event().wait()
        poller = OwnedPoller(self, PollTuning(interval_s=self.poll_s, jitter=0.05, retry_initial_s=60.0))
        task = asyncio.create_task(poller.run(), name=f"{self.name}:poll")
        try:
            await task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
