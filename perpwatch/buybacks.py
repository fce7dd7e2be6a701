"""Buyback programmes and what they bought: the contract between the buyback sources (`watchers/buyback_*`),
their store (`storage/buybacks.py`) and the reports (`bot/buybacks.py`).

A programme is data, not code: a `kind` (how its buys are read) plus the kind's parameters, so an operator
adds one from chat and the bundled defaults are a data file. Every figure keeps where it came from
(`source`) and whether it was measured at the source or estimated (`basis`): DefiLlama's holders revenue is
a USD-per-day estimate under its methodology, a wallet's fills are measured, and USD of a token inflow
valued at a later price is an estimate.

A `Buy` covers a period: a fill is an instant (`start == end`), a balance snapshot's difference covers the
time since the snapshot before it, a DefiLlama day covers that UTC day. Its `key` is unique within the
programme (a fill id, a transaction hash and log index, a snapshot's time, a day), so a replayed page or a
re-read range is recognised and never counted twice. Buys and the source's cursor are stored in one
transaction: a crash between them cannot lose a buy or count one twice.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

ProgrammeKind = Literal[
    "hyperliquid_spot_balance",
    "aster_chain_fills",
    "evm_erc20_inflow",
    "lighter_account_trades",
    "defillama_holders_revenue",
]
KINDS: tuple[ProgrammeKind, ...] = (
    "hyperliquid_spot_balance",
    "aster_chain_fills",
    "evm_erc20_inflow",
    "lighter_account_trades",
    "defillama_holders_revenue",
)

Basis = Literal["measured", "estimated"]

PROGRAMME_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
"""A programme's id as chats type it: `hyperliquid-af`, `aster`, `edgex`."""


@dataclass(frozen=True, slots=True)
class Programme:
    """One buyback programme. `token` keys the token bought by CoinGecko id or `chain:0xcontract`, never by
    ticker alone (two tokens trade as EDGE); `symbol` is only what alerts show."""

    id: str
    kind: ProgrammeKind
    token: str
    symbol: str
    params: Mapping[str, Any]
    source: str
    """The public page that names the wallet or the method: every figure is traced to it."""
    origin: Literal["bundled", "chat"] = "bundled"
    total_supply: Decimal | None = None
    supply_source: str | None = None
    milestone_tokens: Decimal | None = None
    """The default milestone step in tokens for chats that set none (1M HYPE is not 1M ASTER)."""
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Buy:
    """Tokens bought (None when the source gives only USD, like DefiLlama) and USD spent (None when no price
    is known) over `start`..`end`."""

    key: str
    start: datetime
    end: datetime
    tokens: Decimal | None
    usd: Decimal | None
    basis: Basis = "measured"
    note: str | None = None

    @property
    def price(self) -> Decimal | None:
        if self.tokens is None or self.usd is None or self.tokens <= 0:
            return None
        return self.usd / self.tokens


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A balance read at `taken_at`: `balance` tokens held and `cost_usd` what they cost by the source's own
    account (Hyperliquid's `entryNtl`). `gap_s` is set on the first snapshot after a gap: how long no
    snapshot was taken, so the buy it yields is shown as spanning the gap, not as one burst."""

    taken_at: datetime
    balance: Decimal
    cost_usd: Decimal | None
    gap_s: float | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """One step of a source: buys found, the cursor to store with them, a snapshot when the kind keeps
    them, and `more` when the source has further pages to read right away."""

    buys: Sequence[Buy]
    cursor: Any
    snapshot: Snapshot | None = None
    more: bool = False
    running_total: RunningTotal | None = None


@dataclass(frozen=True, slots=True)
class RunningTotal:
    """A total the programme publishes itself (the fund's balance and its cost basis), shown beside ours
    with both sources named rather than one picked."""

    tokens: Decimal | None
    usd: Decimal | None
    source: str
    as_of: datetime


FetchJson = Callable[..., Awaitable[Any]]
"""The poller's budgeted `get_json(Request)`: every request of a source goes through its host's budget."""


@dataclass(frozen=True, slots=True)
class ProgrammeHealth:
    """How a programme's source is doing, kept with its cursor: `/status` shows it, and a total built while
    it fails is marked incomplete."""

    last_good_at: datetime | None = None
    failing_since: datetime | None = None
    last_error: str | None = None
    tracked_since: datetime | None = None
    """The start of the first period stored: before it, nothing of ours is known."""


@dataclass(frozen=True, slots=True)
class WindowTotal:
    """What one programme bought over a window, from the stored buys."""

    window: str
    """`24h`, `7d`, `30d` or `all`."""
    tokens: Decimal
    usd: Decimal
    buys: int
    tokens_known: bool = True
    """False when the programme's source gives only USD (DefiLlama)."""
    covered_from: datetime | None = None
    """The start of the oldest buy counted; later than the window's start when history is shorter."""
    gap_s: float | None = None
    """The longest gap between snapshots inside the window, when there was one."""
    estimated: bool = False

    @property
    def price(self) -> Decimal | None:
        return self.usd / self.tokens if self.tokens_known and self.tokens > 0 else None


@dataclass(frozen=True, slots=True)
class DayPoint:
    """One UTC day of a programme's buys: what the chart draws cumulatively."""

    day: str
    tokens: Decimal
    usd: Decimal


class BuybackLedger(Protocol):
    """The store of programmes, their buys, snapshots and cursors; `storage.BuybackRepo` is one."""

    async def programmes(self) -> list[Programme]: ...

    async def cursor(self, programme_id: str) -> Any | None: ...

    async def last_snapshot(self, programme_id: str) -> Snapshot | None: ...

    async def record(self, programme_id: str, fetched: Fetched, *, at: datetime) -> int:
        """Store the buys, snapshot, running total and cursor in one transaction; marks the source good.
        Returns how many buys were new (a replayed key counts nothing)."""
        ...

    async def failed(self, programme_id: str, error: str, *, at: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source kind's `fetch` is given for one step."""

    programme: Programme
    cursor: Any | None
    now: datetime
    get_json: FetchJson
    last_snapshot: Snapshot | None = None
    urls: Mapping[str, str] = field(default_factory=dict)
    """Endpoint settings by name (`hyperliquid_info_url`, `aster_chain_rpc_url`, …), each defaulting to the real URL."""


class BuybackSource(Protocol):
    """One kind of programme: checks its parameters and reads one step of buys."""

    kind: ProgrammeKind

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters normalised (addresses lower-cased, numbers as Decimal); ValueError with a message
        a chat can read when they are wrong."""
        ...

    async def fetch(self, ctx: SourceContext) -> Fetched: ...
