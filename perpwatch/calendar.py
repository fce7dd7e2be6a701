"""The unlock/TGE calendar model: one entry per dated event a trader wants to hear of before it happens.

Why these fields: traders act on supply before it hits the market, so an entry says when (in UTC, with how
precisely that is known), how many tokens, what share of supply, how sure the date is (`status`) and what
kind of figure it is (`figure`: what a project announced, what actually happened, or a modelled schedule
such as DefiLlama's linear curves, which differ widely from real distributions: research §6.2). Every entry
carries the URL it came from and when that was read, so a chat can check it at the source.

A token is keyed by its CoinGecko id or its contract(s), never by ticker alone: two unrelated tokens trade
as EDGE (research §5.4). A project with no token yet (a rumoured TGE) is keyed by its project, which is no
ticker either; an unlock always needs a token key.

Dates: `starts_at` is the start of the period the event falls in, at the stated precision: an exact instant,
a UTC day, a month or a quarter. "Sometime in Q1" is never shown as a countdown to the minute
(`describe_when`), and reminders shorter than the precision are not scheduled (`leads_for`).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from perpwatch.events import Topic


class EventType(StrEnum):
    UNLOCK = "unlock"
    TGE = "tge"
    AIRDROP_SNAPSHOT = "airdrop_snapshot"
    AIRDROP_CLAIM = "airdrop_claim"
    EPOCH_END = "epoch_end"
    OTHER = "other"


class Precision(StrEnum):
    EXACT = "exact"
    DAY = "day"
    MONTH = "month"
    QUARTER = "quarter"


class Status(StrEnum):
    RUMOURED = "rumoured"
    ANNOUNCED = "announced"
    CONFIRMED = "confirmed"
    DONE = "done"
    CANCELLED = "cancelled"


class Figure(StrEnum):
    ANNOUNCED = "announced"
    ACTUAL = "actual"
    MODEL = "model"


LEADS: tuple[tuple[str, timedelta], ...] = (
    ("7d", timedelta(days=7)),
    ("3d", timedelta(days=3)),
    ("24h", timedelta(hours=24)),
    ("6h", timedelta(hours=6)),
    ("1h", timedelta(hours=1)),
)
"""The fixed ladder of lead times: one reminder event is stored per (calendar entry, lead), and each chat
hears the leads on its own list (`chats.reminder_leads`, /leads). A fixed ladder keeps the reminders one
event each, whatever the number of chats and their choices."""

LEAD_NAMES: tuple[str, ...] = tuple(name for name, _ in LEADS)
LEAD_SPAN: dict[str, timedelta] = dict(LEADS)

_FINEST_LEAD = {
    Precision.EXACT: timedelta(0),
    Precision.DAY: timedelta(hours=24),
    Precision.MONTH: timedelta(days=7),
    Precision.QUARTER: timedelta(days=7),
}
"""The shortest lead that means something at each precision: "in 1 hour" before an unknown time of day, or
"in 24 hours" before sometime in a quarter, would claim a precision the source does not have."""

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._:@-]{0,119}$")
CONTRACT_PATTERN = re.compile(r"^[a-z0-9-]{1,24}:(0x[0-9a-f]{32}|0x[0-9a-f]{40}|[1-9A-HJ-NP-Za-km-z]{32,44})$")
"""`chain:address`: an EVM address (lower-case), a HyperCore token id (16 bytes), or a base58 Solana mint."""
COINGECKO_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.$-]{0,19}$")
MAX_TOKENS = Decimal(10) ** 15


def leads_for(precision: Precision) -> tuple[str, ...]:
    """The ladder's leads that are at least as coarse as what the date is known to."""
    finest = _FINEST_LEAD[precision]
    return tuple(name for name, span in LEADS if span >= finest)


def topic_of(event_type: EventType) -> Topic:
    """Supply events are `unlock`; a launch and its airdrops are `tge` (what a chat subscribes to)."""
    if event_type in (EventType.TGE, EventType.AIRDROP_SNAPSHOT, EventType.AIRDROP_CLAIM):
        return Topic.TGE
    return Topic.UNLOCK


def period_start(moment: datetime, precision: Precision) -> datetime:
    """The start of the period `moment` falls in: what `starts_at` holds at that precision."""
    m = moment.astimezone(UTC)
    if precision is Precision.EXACT:
        return m
    if precision is Precision.DAY:
        return datetime(m.year, m.month, m.day, tzinfo=UTC)
    if precision is Precision.MONTH:
        return datetime(m.year, m.month, 1, tzinfo=UTC)
    return datetime(m.year, 3 * ((m.month - 1) // 3) + 1, 1, tzinfo=UTC)


def period_end(start: datetime, precision: Precision) -> datetime:
    """The end of the period (exclusive): an event at month precision may still come until then."""
    if precision is Precision.EXACT:
        return start
    if precision is Precision.DAY:
        return start + timedelta(days=1)
    months = 1 if precision is Precision.MONTH else 3
    year, month = divmod(start.month - 1 + months, 12)
    return datetime(start.year + year, month + 1, 1, tzinfo=UTC)


def period_label(start: datetime, precision: Precision) -> str:
    """How the date reads at its precision: `2026-12-06 14:00 UTC`, `2026-12-06`, `December 2026`,
    `Q1 2027`."""
    if precision is Precision.EXACT:
        return f"{start:%Y-%m-%d %H:%M} UTC"
    if precision is Precision.DAY:
        return f"{start:%a %Y-%m-%d} (day; time not given)"
    if precision is Precision.MONTH:
        return f"sometime in {start:%B %Y}"
    return f"sometime in Q{(start.month - 1) // 3 + 1} {start.year}"


def countdown(start: datetime, precision: Precision, now: datetime) -> str:
    """How far off the event is, no finer than its precision: minutes for an exact time, days for a day,
    nothing for a month or quarter (the window may open or close: "sometime in Q1" is the honest answer)."""
    if precision is Precision.EXACT:
        seconds = int((start - now).total_seconds())
        if seconds <= 0:
            return "now" if seconds > -3600 else "passed"
        days, rest = divmod(seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes = rest // 60
        parts = [f"{days}d"] if days else []
        if hours or days:
            parts.append(f"{hours}h")
        if not days:
            parts.append(f"{minutes}m")
        return "in " + " ".join(parts)
    if precision is Precision.DAY:
        days = (start.date() - now.date()).days
        return "today" if days == 0 else "tomorrow" if days == 1 else f"in {days} days" if days > 0 else "passed"
    end = period_end(start, precision)
    if now >= end:
        return "passed"
    return "window open now" if now >= start else f"window opens in {(start.date() - now.date()).days} days"


def describe_when(start: datetime, precision: Precision, now: datetime) -> str:
    return f"{period_label(start, precision)}, {countdown(start, precision, now)}"


def parse_when(text: str, precision: str | None = None) -> tuple[datetime, Precision]:
    """`2026-12-06T14:00Z` / `2026-12-06 14:00` (exact, UTC), `2026-12-06` (day), `2026-12` (month),
    `2027-Q1` (quarter); a given precision must agree with the form (or coarsen it). Raises ValueError
    saying what was expected."""
    cleaned = text.strip().upper().removesuffix("UTC").strip().removesuffix("Z")
    quarter = re.fullmatch(r"([0-9]{4})-?Q([1-4])", cleaned)
    found: tuple[datetime, Precision]
    try:
        if quarter:
            found = (datetime(int(quarter[1]), 3 * (int(quarter[2]) - 1) + 1, 1, tzinfo=UTC), Precision.QUARTER)
        elif re.fullmatch(r"[0-9]{4}-[0-9]{2}", cleaned):
            found = (datetime(int(cleaned[:4]), int(cleaned[5:7]), 1, tzinfo=UTC), Precision.MONTH)
        elif re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", cleaned):
            day = date.fromisoformat(cleaned)
            found = (datetime(day.year, day.month, day.day, tzinfo=UTC), Precision.DAY)
        elif re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?", cleaned):
            found = (datetime.fromisoformat(cleaned.replace(" ", "T")).replace(tzinfo=UTC), Precision.EXACT)
        else:
            raise ValueError("bad form")
    except ValueError:
        raise ValueError(
            f"{text[:40]!r} is not a date; expected 2026-12-06T14:00 (UTC), 2026-12-06, 2026-12 or 2027-Q1"
        ) from None
    if precision is None:
        return found
    try:
        wanted = Precision(precision.strip().lower())
    except ValueError:
        raise ValueError(f"precision {precision[:20]!r} is not one of {', '.join(Precision)}") from None
    order = list(Precision)
    if order.index(wanted) < order.index(found[1]):
        raise ValueError(f"{text[:40]!r} is {found[1].value} precision; it cannot be {wanted.value}")
    return period_start(found[0], wanted), wanted


class CalendarEntry(BaseModel):
    """One dated event. `id` is stable across merges (a bundled line's id, `id@date` for a recurring line's
    occurrence, `defillama:…` for a model cliff, `chat-…` for one added in chat), so a merge updates what it
    stored before instead of adding it twice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    project: str = Field(min_length=1, max_length=60)
    token: str | None = Field(default=None, description="The ticker, for display only: never a key.")
    coingecko_id: str | None = None
    contracts: tuple[str, ...] = ()
    event_type: EventType
    starts_at: AwareDatetime
    precision: Precision
    amount_tokens: Decimal | None = Field(default=None, gt=0, le=MAX_TOKENS)
    pct_supply: Decimal | None = Field(default=None, gt=0, le=100, description="Share of total supply, percent.")
    total_supply: Decimal | None = Field(default=None, gt=0, le=MAX_TOKENS)
    status: Status
    figure: Figure
    source_url: str = Field(max_length=500)
    retrieved_at: date
    title: str | None = Field(default=None, max_length=120, description="What happens, e.g. 'team distribution'.")
    note: str | None = Field(default=None, max_length=600)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError(f"id {value[:60]!r} must be 1-120 of a-z 0-9 . _ : @ - (starting with a letter or digit)")
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not TOKEN_PATTERN.match(value):
            raise ValueError(f"token {value[:30]!r} is not a ticker (letters and digits, up to 20)")
        return value

    @field_validator("coingecko_id")
    @classmethod
    def _coingecko(cls, value: str | None) -> str | None:
        if value is not None and not COINGECKO_PATTERN.match(value):
            raise ValueError(f"coingecko_id {value[:40]!r} is not a CoinGecko id (lower-case, like 'aster-2')")
        return value

    @field_validator("contracts")
    @classmethod
    def _contracts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for contract in value:
            chain, _, address = contract.partition(":")
            normal = f"{chain.lower()}:{address.lower()}" if address.lower().startswith("0x") else contract
            if not CONTRACT_PATTERN.match(normal):
                raise ValueError(f"contract {contract[:80]!r} is not chain:address (e.g. bsc:0x…, solana:<mint>)")
            out.append(normal)
        return tuple(out)

    @field_validator("source_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+\.[^\s]*$", value):
            raise ValueError(f"source_url {value[:60]!r} is not an http(s) URL")
        return value

    @field_validator("starts_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("amount_tokens", "pct_supply", "total_supply")
    @classmethod
    def _finite(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not value.is_finite():
            raise ValueError("not a finite number")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CalendarEntry:
        if period_start(self.starts_at, self.precision) != self.starts_at:
            raise ValueError(
                f"starts_at {self.starts_at:%Y-%m-%d %H:%M} is not the start of its {self.precision.value}"
            )
        if self.coingecko_id is None and not self.contracts and self.event_type is EventType.UNLOCK:
            raise ValueError(
                "an unlock needs coingecko_id or contracts: a ticker alone is no key (two tokens are EDGE)"
            )
        return self

    @property
    def token_key(self) -> str:
        """What the token is known by: its CoinGecko id, else its first contract, else (no token yet) its
        project. Never the ticker."""
        if self.coingecko_id:
            return f"coingecko:{self.coingecko_id}"
        if self.contracts:
            return self.contracts[0]
        return "project:" + re.sub(r"[^a-z0-9]+", "-", self.project.lower()).strip("-")

    @property
    def topic(self) -> Topic:
        return topic_of(self.event_type)

    @property
    def ends_at(self) -> datetime:
        """When the event can be said to have passed: its instant, or the end of its period."""
        return period_end(self.starts_at, self.precision)

    def timing(self) -> tuple[datetime, Precision]:
        return self.starts_at, self.precision

    def fingerprint(self) -> str:
        """A hash of what the entry says: a merge of an unchanged line changes nothing."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def matches_token(self, query: str) -> bool:
        """/upcoming's token filter: a CoinGecko id, a contract, a project name, or a ticker (a ticker
        filter may list two tokens that share it; the lines say which is which)."""
        q = query.strip().lower()
        return q in {
            (self.coingecko_id or "").lower(),
            (self.token or "").lower(),
            self.project.lower(),
            *(c.lower() for c in self.contracts),
            *(c.split(":", 1)[1].lower() for c in self.contracts),
        }
