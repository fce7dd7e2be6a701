"""The one event model that flows from a watcher, through the pipeline, to every platform.

Watchers translate each venue's wire words into meaning here, so nothing downstream ever needs to know
that Binance's `o.S=SELL` and Bybit's `S=Buy` both mean "a long was liquidated".

The envelope carries what every alert family needs and nothing platform-specific: what the event is about
(`subject`: fan-out matches watch lists on it), what a later event updates (`thread`, with a `revision`),
when its alerts are due (`due_at`, default: when accepted), when an unsent one is stale (`expires_at`), and
whether it is for one chat only (`audience`: a report at that chat's own hour or step).
Bodies are one discriminated union on `kind`; a family adds its body here and its renderer in
`bot/families/`. Stored bodies carry `BODY_SCHEMA`, so a body written by an older release still decodes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

BODY_SCHEMA = 2
"""The version of the stored event JSON. 1: the first release (no subject, thread, revision, due or expiry
fields, which decode to their defaults); 2: this envelope."""

MAX_USD = Decimal(10) ** 11
"""No single event is worth $100 billion: a figure above it is a venue bug or a hostile frame."""

MIN_USD = Decimal("0.01")
"""A notional below a cent is noise or a broken figure ("$0.00" helps nobody)."""

SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,39}$")
"""What a venue symbol may look like: ASCII letters, digits and a few separators (BTCUSDT, BTC-USDT-SWAP,
kPEPE, xyz:TSLA). Anything else (control characters, escape sequences, a right-to-left override) is refused
before it can reach a console or a chat."""

SUBJECT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
THREAD_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")


class Topic(StrEnum):
    """What a chat subscribes to. Later sources add bodies, not topics, where a topic already fits."""

    LIQUIDATION = "liquidation"
    CASCADE = "cascade"
    WHALE = "whale"
    BUYBACK = "buyback"
    UNLOCK = "unlock"
    TGE = "tge"


class Venue(StrEnum):
    BINANCE = "binance"
    ASTER = "aster"
    BYBIT = "bybit"
    OKX = "okx"
    LIGHTER = "lighter"
    PACIFICA = "pacifica"
    HYPERLIQUID = "hyperliquid"
    EDGEX = "edgex"


class PositionSide(StrEnum):
    """The side of the *position*, never a venue's order side."""

    LONG = "long"
    SHORT = "short"


def _bounded(value: Decimal, name: str) -> Decimal:
    """Finite, and of a magnitude a real market can have: `1e400` parses, and then overflows storage."""
    if not value.is_finite():
        raise ValueError(f"{name} is not a finite number")
    if value != 0 and not -18 <= value.adjusted() <= 15:
        raise ValueError(f"{name}={value} is outside any plausible range")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LiquidationBody(_Body):
    """A forced close of one position.

    `side` is the position that was liquidated. `notional_usd` is filled size times average fill price,
    computed from the wire's decimal strings; venues that report quote in a stablecoin count it as USD.
    """

    kind: Literal["liquidation"] = "liquidation"
    side: PositionSide
    size: Decimal = Field(gt=0, description="Filled size in base units.")
    price: Decimal = Field(gt=0, description="Average fill price in quote units.")
    notional_usd: Decimal = Field(ge=MIN_USD, le=MAX_USD)
    account: str | None = Field(default=None, max_length=128)
    cause: Literal["liquidation", "adl"] = Field(
        default="liquidation",
        description="adl: the position was closed by auto-deleveraging against a bankrupt one, not liquidated.",
    )
    method: Literal["market", "backstop"] | None = Field(
        default=None, description="How the venue closed it, where it says: into the book, or taken by its vault."
    )
    sampled: bool = Field(
        default=False,
        description="The venue's feed omits some liquidations (one per symbol per second, or partial), so counts "
        "and totals built from it are floors.",
    )
    note: str | None = Field(
        default=None,
        max_length=300,
        description="A caveat the venue imposes, shown with the alert (e.g. a sampled feed).",
    )

    @field_validator("size", "price", "notional_usd")
    @classmethod
    def _plausible(cls, value: Decimal, info: object) -> Decimal:
        return _bounded(value, getattr(info, "field_name", "figure"))


class CascadeBody(_Body):
    """Liquidations bunched in a window, on one venue and symbol (`scope="symbol"`) or across the market.

    Each revision carries the running figures since the cascade opened, so the newest one alone tells the
    whole story (an edit replaces the message) and a restarted bot picks the cascade up from it. Counts of
    members from feeds that omit liquidations (`sampled_venues`) are floors.
    """

    kind: Literal["cascade"] = "cascade"
    scope: Literal["symbol", "market"]
    count: int = Field(ge=1)
    usd: Decimal = Field(ge=0, le=MAX_USD)
    long_count: int = Field(ge=0)
    long_usd: Decimal = Field(ge=0, le=MAX_USD)
    short_count: int = Field(ge=0)
    short_usd: Decimal = Field(ge=0, le=MAX_USD)
    largest_usd: Decimal = Field(ge=0, le=MAX_USD)
    largest_symbol: str
    largest_venue: Venue
    largest_side: PositionSide
    venues: tuple[Venue, ...]
    sampled_venues: tuple[Venue, ...] = ()
    started_at: AwareDatetime
    last_at: AwareDatetime
    window_s: int = Field(gt=0)
    closed: bool = False


ADDRESS_PATTERN = re.compile(r"^0x[0-9a-f]{40}$")
SOLANA_ADDRESS_PATTERN = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
"""A Solana account (Pacifica's): a base58 public key, 32-44 characters of the Bitcoin alphabet (no 0, O, I,
l). Case matters in base58, so these are kept as given, never lower-cased."""


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def is_solana_address(value: str) -> bool:
    """A base58 string that decodes to exactly 32 bytes (an ed25519 public key): the pattern alone would take
    a 0x address typed without its 0x (40 hex digits without a zero are base58 too), which decodes shorter."""
    if not SOLANA_ADDRESS_PATTERN.match(value):
        return False
    number = 0
    for char in value:
        number = number * 58 + _BASE58.index(char)
    zeros = len(value) - len(value.lstrip("1"))  # each leading "1" is a zero byte
    return zeros + (number.bit_length() + 7) // 8 == 32


def _wallet(value: str) -> str:
    if not ADDRESS_PATTERN.match(value) and not is_solana_address(value):
        raise ValueError(f"{value[:60]!r} is neither a lower-case 0x address nor a base58 Solana address")
    return value


class PositionBody(_Body):
    """A watched wallet's position changed: opened, grew, was cut, closed or flipped across zero.

    Sizes are absolute base units with the side beside them, so a flip reads as "LONG 10 → SHORT 4". Figures
    the source did not give stay None (the public trades stream carries no PnL, leverage or entry), and the
    alert shows only what is known. `seen_by` says whether fills showed the change as it happened or a
    snapshot found it afterwards (after a restart or a missed fill): then there is no trade price.
    """

    kind: Literal["position"] = "position"
    wallet: str
    coin: str
    change: Literal["opened", "increased", "reduced", "closed", "flipped"]
    side_before: PositionSide | None
    side_after: PositionSide | None
    size_before: Decimal = Field(ge=0)
    size_after: Decimal = Field(ge=0)
    price: Decimal | None = Field(default=None, gt=0, description="Average price of the fills that made it.")
    notional_usd: Decimal = Field(ge=0, le=MAX_USD, description="What changed hands, or the position's value.")
    entry_px: Decimal | None = Field(default=None, gt=0)
    leverage: int | None = Field(default=None, gt=0)
    realised_pnl_usd: Decimal | None = None
    seen_by: Literal["fills", "snapshot"] = "fills"
    note: str | None = Field(default=None, max_length=300)

    @field_validator("wallet")
    @classmethod
    def _address(cls, value: str) -> str:
        return _wallet(value)


class DistanceBody(_Body):
    """A watched position nears its liquidation price: `distance` is (mark − liq) / mark for a long, the
    mirror for a short. One thread per wallet and coin, so a deepening warning edits the message."""

    kind: Literal["liq_distance"] = "liq_distance"
    wallet: str
    coin: str
    side: PositionSide
    size: Decimal = Field(gt=0)
    notional_usd: Decimal = Field(ge=0, le=MAX_USD)
    mark_px: Decimal = Field(gt=0)
    liquidation_px: Decimal = Field(gt=0)
    distance: Decimal
    threshold: Decimal = Field(gt=0, lt=1)

    @field_validator("wallet")
    @classmethod
    def _address(cls, value: str) -> str:
        return _wallet(value)


class WhaleTradeBody(_Body):
    """One large trade by any address on the public trades stream: both sides named, the taker's side."""

    kind: Literal["whale_trade"] = "whale_trade"
    coin: str
    taker_side: Literal["buy", "sell"]
    size: Decimal = Field(gt=0)
    price: Decimal = Field(gt=0)
    notional_usd: Decimal = Field(ge=MIN_USD, le=MAX_USD)
    buyer: str
    seller: str
    buyer_label: str | None = Field(default=None, max_length=64)
    seller_label: str | None = Field(default=None, max_length=64)

    @field_validator("buyer", "seller")
    @classmethod
    def _addresses(cls, value: str) -> str:
        return _wallet(value)


class BuybackLine(_Body):
    """One programme's figures in a buyback alert, each with where it came from.

    `tokens` is None when the source gives only USD (DefiLlama's estimate), `usd` None when no price is known.
    `incomplete` says why a figure is a floor (a source failing since a time, history shorter than the
    window, a gap between snapshots), so the alert never passes off a partial figure as a whole one.
    `published_*` is the programme's own running total (the fund's balance and cost basis), shown beside ours
    with its source rather than one of the two picked."""

    programme: str
    symbol: str
    window: str
    tokens: Decimal | None = None
    usd: Decimal | None = Field(default=None, ge=0, le=MAX_USD)
    avg_price: Decimal | None = None
    share_of_supply: Decimal | None = Field(default=None, ge=0)
    basis: Literal["measured", "estimated"] = "measured"
    source: str = Field(max_length=300)
    incomplete: str | None = Field(default=None, max_length=300)
    total_tokens: Decimal | None = None
    total_usd: Decimal | None = Field(default=None, ge=0, le=MAX_USD)
    tracked_since: AwareDatetime | None = None
    published_tokens: Decimal | None = None
    published_usd: Decimal | None = Field(default=None, ge=0, le=MAX_USD)
    published_source: str | None = Field(default=None, max_length=300)


class BuybackSummaryBody(_Body):
    """A chat's daily buyback summary, at its own hour in its own time zone (the event's `audience`)."""

    kind: Literal["buyback_summary"] = "buyback_summary"
    day: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="The chat's local date.")
    zone: str = Field(max_length=64)
    lines: tuple[BuybackLine, ...]


class BuybackMilestoneBody(_Body):
    """A programme's running total passed a multiple of a chat's step: every N tokens or every $X."""

    kind: Literal["buyback_milestone"] = "buyback_milestone"
    unit: Literal["tokens", "usd"]
    step: Decimal = Field(gt=0)
    reached: Decimal = Field(gt=0)
    line: BuybackLine


class CalendarReminderBody(_Body):
    """A reminder, `lead` ('7d', '24h', '1h') before a calendar entry (perpwatch.calendar): what, when at
    its precision, how many tokens, their USD value at the price read when the reminder fell due, the share
    of total and circulating supply where known, how sure the date is and where it comes from.

    `lead` is the reminder's level in the log, matched against each chat's lead times. `late_note` says it
    fell due while the bot was stopped and goes out late. Figures not known stay None and are not shown."""

    kind: Literal["calendar_reminder"] = "calendar_reminder"
    lead: str = Field(pattern=r"^[0-9]{1,3}[dhm]$")
    entry_id: str = Field(max_length=120)
    project: str = Field(max_length=60)
    token: str | None = Field(default=None, max_length=20)
    token_key: str = Field(max_length=140, description="CoinGecko id or contract: never a ticker alone.")
    event_type: str = Field(max_length=20)
    title: str | None = Field(default=None, max_length=120)
    starts_at: AwareDatetime
    precision: Literal["exact", "day", "month", "quarter"]
    amount_tokens: Decimal | None = Field(default=None, gt=0)
    price_usd: Decimal | None = Field(default=None, gt=0)
    price_source: str | None = Field(default=None, max_length=40, description="'CoinGecko', 'Hyperliquid mark'.")
    value_usd: Decimal | None = Field(default=None, ge=0, le=MAX_USD)
    pct_total: Decimal | None = Field(default=None, gt=0, le=100)
    pct_circulating: Decimal | None = Field(default=None, gt=0)
    status: str = Field(max_length=20)
    figure: str = Field(max_length=20)
    source_url: str = Field(max_length=500)
    retrieved_at: str = Field(max_length=10)
    note: str | None = Field(default=None, max_length=600)
    late_note: str | None = Field(default=None, max_length=300)


class CalendarChangeBody(_Body):
    """A calendar entry a chat was already reminded of moved (from, to) or was cancelled: sent to each such
    chat alone (the event's `audience`), as a new message, not a silent edit of the old reminder."""

    kind: Literal["calendar_change"] = "calendar_change"
    change: Literal["moved", "cancelled"]
    entry_id: str = Field(max_length=120)
    project: str = Field(max_length=60)
    token: str | None = Field(default=None, max_length=20)
    token_key: str = Field(max_length=140)
    event_type: str = Field(max_length=20)
    title: str | None = Field(default=None, max_length=120)
    from_at: AwareDatetime
    from_precision: Literal["exact", "day", "month", "quarter"]
    to_at: AwareDatetime | None = None
    to_precision: Literal["exact", "day", "month", "quarter"] | None = None
    source_url: str = Field(max_length=500)


# The discriminated union grows here as later families add bodies (cascade, whale, buyback, unlock, tge);
# each also registers its renderer in `bot/families/`, which a test keeps in step with this union.
EventBody = Annotated[
    LiquidationBody
    | CascadeBody
    | PositionBody
    | DistanceBody
    | WhaleTradeBody
    | BuybackSummaryBody
    | BuybackMilestoneBody
    | CalendarReminderBody
    | CalendarChangeBody,
    Field(discriminator="kind"),
]


class Event(BaseModel):
    """One real-world occurrence, as accepted by the pipeline.

    `key` is stable and unique per occurrence (the venue's own id where it has one), so a frame replayed
    after a reconnect, or an event re-sent after a crash, is recognised and alerts nobody twice. An event
    with a `thread` updates what earlier revisions of that thread said: only the newest pending one goes
    out, and where an older one was already sent it is edited in place.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1, max_length=300)
    topic: Topic
    source: str = Field(min_length=1, max_length=64, description="The watcher that produced it, e.g. 'forceorder'.")
    venue: Venue | None = None
    symbol: str | None = None
    usd: Decimal | None = Field(default=None, ge=0, le=MAX_USD)
    occurred_at: AwareDatetime
    body: EventBody
    link: str | None = Field(
        default=None,
        max_length=500,
        description="Where a trader looks next: the market's page, an explorer, a schedule.",
    )
    subject: str | None = Field(default=None, description="The wallet, account or token the event is about.")
    thread: str | None = Field(default=None, description="What later revisions update: a cascade, a position.")
    revision: int = Field(default=0, ge=0, le=2**53)
    due_at: AwareDatetime | None = Field(default=None, description="When its alerts are due; None: on accept.")
    expires_at: AwareDatetime | None = Field(default=None, description="An alert unsent by then is dropped.")
    audience: int | None = Field(
        default=None,
        gt=0,
        description="The one chat (its store id) a scheduled report is for: a summary at that chat's hour, a "
        "milestone at its step. None: every chat whose subscriptions match.",
    )

    @field_validator("occurred_at", "due_at", "expires_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str | None) -> str | None:
        if value is not None and not SYMBOL_PATTERN.match(value):
            raise ValueError(f"symbol {value[:60]!r} is not a plain venue symbol")
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not SUBJECT_PATTERN.match(value):
            raise ValueError(f"subject {value[:60]!r} is not an address, account or token id")
        return value.lower() if value[:2].lower() == "0x" else value

    @field_validator("thread")
    @classmethod
    def _thread(cls, value: str | None) -> str | None:
        if value is not None and not THREAD_PATTERN.match(value):
            raise ValueError("thread must be 1-200 printable ASCII characters")
        return value

    @field_validator("usd")
    @classmethod
    def _usd(cls, value: Decimal | None) -> Decimal | None:
        return None if value is None else _bounded(value, "usd")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("key must be printable")
        return value

    @model_validator(mode="after")
    def _times(self) -> Event:
        if self.due_at is not None and self.expires_at is not None and self.expires_at <= self.due_at:
            raise ValueError("expires_at must be after due_at")
        return self


def utc_from_ms(ms: int) -> datetime:
    """Venues stamp events in Unix milliseconds; we keep aware UTC from the wire on."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


_PLAIN_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def parse_decimal(raw: object, name: str) -> Decimal:
    """A wire figure as an exact Decimal, from a plain ASCII decimal string (or an int, or a Decimal the JSON
    decoder made). Refused: floats (digits already lost), exponents, `1_000`, digits of another script,
    NaN and infinities, which Python's Decimal would all accept."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise ValueError(f"{name} is {type(raw).__name__}, expected a decimal string")
    text = str(raw)
    if isinstance(raw, Decimal):
        if not raw.is_finite():
            raise ValueError(f"{name}={text!r} is not a finite decimal")
        text = format(raw, "f")
    if len(text) > 60 or not _PLAIN_DECIMAL.match(text):
        raise ValueError(f"{name}={text[:60]!r} is not a plain decimal")
    return _bounded(Decimal(text), name)
