"""One Hyperliquid account, read from the info API and the WebSocket: the pure foundation of the whale
watcher (no I/O, no sockets, no storage).

Everything read here is named in `/work/shared/research/exchange-apis.md` §1 and §8.5 or shown in a sample
of `/work/shared/payloads/hyperliquid_*` (each with its `.src.txt`); where those are silent the input is
refused with a reason, never guessed. Figures are `Decimal` from the wire's decimal strings
(`perpwatch.events.parse_decimal`: a float, an exponent or NaN is refused), times aware UTC from Unix ms.

- `parse_clearinghouse`: `clearinghouseState` (§1.2; sample `hyperliquid_clearinghouseState_docs.json`).
- `parse_perp_dexs`: `perpDexs` (§8.5: element 0 is `null`, the first/main dex).
- `parse_user_fill`, `parse_user_fills`, `parse_user_fills_frame`: the fill object of `userFills`,
  `userFillsByTime` and the WS `userFills` channel (§1.2, §1.3; samples
  `hyperliquid_userFills_assistanceFund_real2026_excerpt.json`, `hyperliquid_ws_userFills_ccxt.json`).
- `fills_for_wallets`: the public `trades` channel (§1.3; sample `hyperliquid_ws_trades_ccxt.json`, which
  predates `users`).
- `group_by_order`, `classify`: aggregation and position-change kinds (no wire fields beyond the above).
- `liquidation_of`, `parse_ledger_update`: liquidations and ADL (§1.2, §1.5; the node-fills samples in
  `tests/node_fills/sample_blocks.jsonl` and the rules of `watchers/hyperliquid_node.py`).
- `distance`, `DistanceAlarm`: how far mark is from `liquidationPx`, and alerts at thresholds.
- `WEIGHTS`, `weight`: info request weights (§1.2, §1.4, §8.5).

Left open by the docs, and what this module does about each:

- A bare coin name in a HIP-3 dex's `clearinghouseState`: the docs name HIP-3 coins `dex:COIN` and show no
  bare one, so a bare name (or another dex's prefix) is refused (`HIP3_COIN`), not prefixed.
- Dex-name charset (`perpDexs[].name`): undocumented; a colon, spaces and control bytes are refused.
- A zero `szi` row in `assetPositions`, an `assetPositions[].type` other than `oneWay`, a leverage type other
  than cross/isolated: not described, refused.
- `liquidatedUser` may be absent (§1.2); then only a "Liquidated …" `dir` on a fill that closes that side of
  the wallet's own position counts (see `liquidation_of`). An ADL fill naming the wallet itself as
  `liquidatedUser` is not described: refused.
- A `liquidation.method` other than market/backstop, a ledger `delta.type` not listed in §1.2: refused.
- `liquidatedNtlPos` is on the wire but not in the docs' TS type: optional.
- The extra weight "per 20 items returned" of `userFills(ByTime)` has no documented amount or rounding: 1 per
  started block of 20 is budgeted (`EXTRA_WEIGHT_PER_BLOCK`); `spotMeta` is 2 on one page and 20 on another.
- How fills of one order are ordered when they share a `time`: not documented; `group_by_order` takes a
  buy's lowest and a sell's highest `startPosition` as the position before the order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from perpwatch.events import PositionSide, parse_decimal
from watchers import venuekit as kit
from watchers.validate import BAD_FIGURE, BAD_SYMBOL, Refused

SIDE_MISMATCH = kit.SIDE_MISMATCH
UNKNOWN_KIND = kit.UNKNOWN_KIND
HIP3_COIN = "hip3_coin"
"""A coin whose `dex:` prefix does not match the dex it was asked for (§1.1 coin naming)."""
BORROW_LIQUIDATION = "borrow_liquidation"
"""A spot-margin borrow liquidation (`watchers.hyperliquid_node`): no perp position, refused."""

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
# Perps "BTC", HIP-3 perps "dex:COIN", spot "PURR/USDC" or "@107" (§1.1): ASCII only, like SYMBOL_PATTERN.
_COIN = re.compile(r"^@?[A-Za-z0-9][A-Za-z0-9._:/-]{0,39}$")
# Dex names: the docs show only placeholders ("test"); live names are short lower-case words (xyz, flx). No
# charset is documented, so only what cannot confuse a coin name is refused: a colon, spaces, control bytes.
_DEX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_SIDES = ("B", "A")


# ---------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------


def _address(value: object, name: str) -> str:
    """An address, lower-cased: addresses are compared case-insensitively everywhere here."""
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise ValueError(f"{name}={str(value)[:60]!r} is not an address")
    return value.lower()


def _coin(value: object, name: str) -> str:
    raw = kit.text(value, name)
    if not _COIN.match(raw):
        raise Refused(BAD_SYMBOL, f"{name}={raw[:60]!r} is not a Hyperliquid coin name")
    return raw


def _signed(value: object, name: str) -> Decimal:
    """Any finite decimal, of either sign (szi, PnL, fees, account value)."""
    try:
        return parse_decimal(value, name)
    except ValueError as exc:
        raise Refused(BAD_FIGURE, str(exc)) from None


def _not_negative(value: object, name: str) -> Decimal:
    number = _signed(value, name)
    if number < 0:
        raise Refused(BAD_FIGURE, f"{name}={value!r} is negative")
    return number


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not a boolean")
    return value


def _side(value: object, name: str) -> Literal["B", "A"]:
    # docs "Notation": "B" = bid/buy, "A" = ask/sell (§1.1).
    if value == "B":
        return "B"
    if value == "A":
        return "A"
    raise ValueError(f"{name}={value!r} is neither B nor A")


def _id(value: object, name: str) -> int:
    # `oid`, `tid`, `lid` are integers (§1.1).
    number = kit.integer(value, name)
    if number < 0:
        raise ValueError(f"{name}={value!r} is not an id")
    return number


# ---------------------------------------------------------------------------------------------------------
# clearinghouseState
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leverage:
    """`leverage: {type:"cross", value:int} | {type:"isolated", value:int, rawUsd}` (§1.2)."""

    type: Literal["cross", "isolated"]
    value: int
    raw_usd: Decimal | None = None
    """Isolated positions only (the sample's `-95.059824`: signed)."""


@dataclass(frozen=True, slots=True)
class Position:
    coin: str
    """As the API names it: `BTC` on the main dex, `dex:COIN` on a HIP-3 dex (§1.1, §8.5)."""
    dex: str
    """`""` for the main dex, as requests name it."""
    size: Decimal
    """`szi`: signed base units, + long, − short (docs "Notation")."""
    entry_px: Decimal
    position_value_usd: Decimal
    """`positionValue` = |szi| × mark (§1.2); Lighter's `position_value`. Pacifica gives no mark: there it is
    |amount| × entry price (`watchers.pacifica_accounts`), and its alerts say so."""
    unrealized_pnl_usd: Decimal | None
    """None only where a venue publishes none (Pacifica's `positions`); Hyperliquid always gives it."""
    return_on_equity: Decimal | None
    """None where the venue publishes none (Lighter, Pacifica): never computed here."""
    leverage: Leverage | None
    """None where the venue states no leverage for the position (Lighter, Pacifica): never derived."""
    liquidation_px: Decimal | None
    """`liquidationPx` is `null` when there is none (§1.2): kept None, never read as 0. Also None where a
    venue publishes no liquidation price at all (Pacifica)."""
    margin_used_usd: Decimal | None
    """None where the venue gives no per-position margin (Lighter and Pacifica cross positions)."""
    max_leverage: int | None
    """None where the account answer carries no market limit (Lighter, Pacifica)."""

    @property
    def side(self) -> PositionSide:
        return PositionSide.LONG if self.size > 0 else PositionSide.SHORT


@dataclass(frozen=True, slots=True)
class MarginSummary:
    """`{accountValue, totalNtlPos, totalRawUsd, totalMarginUsed}` (§1.2)."""

    account_value_usd: Decimal
    total_ntl_pos_usd: Decimal
    total_raw_usd: Decimal
    total_margin_used_usd: Decimal


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    dex: str
    at: datetime
    """`time` (ms) of the response."""
    margin_summary: MarginSummary | None
    """Cross and isolated together (§1.2). None for a venue that has no such summary (Lighter, Pacifica)."""
    cross_margin_summary: MarginSummary | None
    """Cross only."""
    cross_maintenance_margin_used_usd: Decimal | None
    withdrawable_usd: Decimal | None
    positions: tuple[Position, ...]
    equity_usd: Decimal | None = None
    """The account's value as a venue without Hyperliquid's margin summary states it (Lighter's
    `total_asset_value`); None where the answer carries none (Pacifica's `positions`)."""

    @property
    def account_value_usd(self) -> Decimal | None:
        """`marginSummary.accountValue`. Under a unified/portfolio-margin account the docs point to
        `spotClearinghouseState` for the real trading balance (§1.2); that is not read here. Other venues:
        `equity_usd`."""
        if self.margin_summary is not None:
            return self.margin_summary.account_value_usd
        return self.equity_usd

    def position(self, coin: str) -> Position | None:
        return next((p for p in self.positions if p.coin == coin), None)

    def sizes(self) -> dict[str, Decimal]:
        """Signed size per coin: what `classify` compares with the next snapshot or fill."""
        return {p.coin: p.size for p in self.positions}


def _margin_summary(raw: object, name: str) -> MarginSummary:
    body = kit.mapping(raw, name)
    return MarginSummary(
        account_value_usd=_signed(body.get("accountValue"), f"{name}.accountValue"),
        total_ntl_pos_usd=_not_negative(body.get("totalNtlPos"), f"{name}.totalNtlPos"),
        total_raw_usd=_signed(body.get("totalRawUsd"), f"{name}.totalRawUsd"),
        total_margin_used_usd=_not_negative(body.get("totalMarginUsed"), f"{name}.totalMarginUsed"),
    )


def _leverage(raw: object, name: str) -> Leverage:
    body = kit.mapping(raw, name)
    kind = body.get("type")
    value = kit.integer(body.get("value"), f"{name}.value")
    if value < 1:
        raise Refused(BAD_FIGURE, f"{name}.value={value} is below 1")
    if kind == "cross":
        return Leverage("cross", value)
    if kind == "isolated":
        return Leverage("isolated", value, _signed(body.get("rawUsd"), f"{name}.rawUsd"))
    raise Refused(UNKNOWN_KIND, f"{name}.type={kind!r} is neither cross nor isolated")


def _dex(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"dex={value!r} is not a string")
    if value and not _DEX.match(value):
        raise ValueError(f"dex={value[:60]!r} is not a dex name")
    return value


def _dex_coin(raw: object, dex: str, name: str) -> str:
    """The coin as §1.1/§8.5 name it: bare on the main dex, `dex:COIN` on a HIP-3 dex ("HIP-3 dex universes
    use names `dex:COIN`"). The docs never show a bare name from a HIP-3 dex, so one is refused rather than
    prefixed: it could as well be a main-dex coin answered by mistake."""
    coin = _coin(raw, name)
    prefix, colon, rest = coin.partition(":")
    if not dex:
        if colon:
            raise Refused(HIP3_COIN, f"{name}={coin!r} carries a dex prefix, but the main dex was asked")
        return coin
    if not colon or prefix != dex or not rest:
        raise Refused(HIP3_COIN, f"{name}={coin!r} is not named {dex}:COIN (HIP-3 coins are dex:COIN, §1.1)")
    return coin


def _position(raw: object, dex: str, name: str) -> Position:
    item = kit.mapping(raw, name)
    # "oneWay" is the only documented `type` (§1.2); another would be a position model not described.
    if item.get("type") != "oneWay":
        raise Refused(UNKNOWN_KIND, f"{name}.type={item.get('type')!r} is not oneWay")
    where = f"{name}.position"
    p = kit.mapping(item.get("position"), where)
    size = _signed(p.get("szi"), f"{where}.szi")
    if size == 0:
        # The docs list open positions only; a zero row is not described.
        raise Refused(BAD_FIGURE, f"{where}.szi is zero")
    liq_raw = p.get("liquidationPx")
    return Position(
        coin=_dex_coin(p.get("coin"), dex, f"{where}.coin"),
        dex=dex,
        size=size,
        entry_px=kit.figure(p.get("entryPx"), f"{where}.entryPx"),
        position_value_usd=_not_negative(p.get("positionValue"), f"{where}.positionValue"),
        unrealized_pnl_usd=_signed(p.get("unrealizedPnl"), f"{where}.unrealizedPnl"),
        return_on_equity=_signed(p.get("returnOnEquity"), f"{where}.returnOnEquity"),
        leverage=_leverage(p.get("leverage"), f"{where}.leverage"),
        liquidation_px=None if liq_raw is None else _not_negative(liq_raw, f"{where}.liquidationPx"),
        margin_used_usd=_not_negative(p.get("marginUsed"), f"{where}.marginUsed"),
        max_leverage=kit.integer(p.get("maxLeverage"), f"{where}.maxLeverage"),
    )


def parse_clearinghouse(body: Any, *, dex: str = "") -> AccountSnapshot:
    """The response to `{"type":"clearinghouseState","user":…,"dex":dex}` (weight 2). The WS subscription of
    that name re-pushes the "full ClearinghouseState" (§1.3); the envelope around it there is not described
    in the research and is not read here: pass the state object itself.

    The docs sample: one isolated ETH long, `szi` 0.0335 at 2986.3, liquidation at 2866.26936529, 20×,
    margin used 4.967826; account value 13109.482328 at 1708622398623. Any unreadable field raises
    ValueError (a `Refused` for a figure or name) naming it; one coin listed twice is refused too.
    """
    dex = _dex(dex)
    data = kit.mapping(body, "clearinghouseState")
    positions = tuple(
        _position(raw, dex, f"assetPositions[{i}]")
        for i, raw in enumerate(kit.array(data.get("assetPositions"), "assetPositions"))
    )
    coins = [p.coin for p in positions]
    if len(set(coins)) != len(coins):
        raise ValueError(f"assetPositions lists a coin twice: {sorted(coins)}")
    return AccountSnapshot(
        dex=dex,
        at=kit.ms_time(data.get("time"), "time"),
        margin_summary=_margin_summary(data.get("marginSummary"), "marginSummary"),
        cross_margin_summary=_margin_summary(data.get("crossMarginSummary"), "crossMarginSummary"),
        cross_maintenance_margin_used_usd=_not_negative(
            data.get("crossMaintenanceMarginUsed"), "crossMaintenanceMarginUsed"
        ),
        withdrawable_usd=_not_negative(data.get("withdrawable"), "withdrawable"),
        positions=positions,
    )


# ---------------------------------------------------------------------------------------------------------
# perpDexs
# ---------------------------------------------------------------------------------------------------------


def parse_perp_dexs(body: Any) -> list[str]:
    """`{"type":"perpDexs"}` → the dex names to send as `"dex"`, the main dex first as `""`.

    §8.5: "array whose element 0 is `null` (the first/main dex), others `{"name", …}`"; requests name the
    main dex `"dex":""` (§1.2). A `null` anywhere else, an element 0 that is not null, or a name twice is
    refused: the docs describe none of them.
    """
    items = kit.array(body, "perpDexs")
    if not items:
        raise ValueError("perpDexs is empty; the docs put null (the main dex) first")
    if items[0] is not None:
        raise ValueError(f"perpDexs[0]={str(items[0])[:80]} is not null (the main dex, §8.5)")
    names = [""]
    for i, raw in enumerate(items[1:], start=1):
        if raw is None:
            raise ValueError(f"perpDexs[{i}] is null; only element 0 (the main dex) is")
        name = kit.text(kit.mapping(raw, f"perpDexs[{i}]").get("name"), f"perpDexs[{i}].name")
        if not _DEX.match(name):
            raise ValueError(f"perpDexs[{i}].name={name[:60]!r} is not a dex name")
        if name in names:
            raise ValueError(f"perpDexs lists {name!r} twice")
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------------------
# Fills
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FillLiquidation:
    """`liquidation?: {liquidatedUser?, markPx, method: "market" | "backstop"}`, present only on
    liquidation-related fills, on the liquidated account's fill and its counterparties' alike (§1.2)."""

    liquidated_user: str | None
    """Lower case; absent on some fills (nktkas test "liquidation without liquidatedUser", §1.2)."""
    mark_px: Decimal
    method: Literal["market", "backstop"]
    """§1.5: `market` = market orders sent to the book; `backstop` = the liquidator vault took it over."""


@dataclass(frozen=True, slots=True)
class Fill:
    """One fill of one account (`userFills`, `userFillsByTime`, WS `WsFill`, §1.2)."""

    coin: str
    px: Decimal
    sz: Decimal
    side: Literal["B", "A"]
    at: datetime
    time_ms: int
    hash: str
    """May be all zeros (AF sample element 5, the backstop node sample): not a unique key alone."""
    tid: int
    """Unique with (time, coin) (docs WsTrade comment, §1.2)."""
    oid: int | None
    dir: str
    """A display string (§1.2): "Open Long", "Close Short", "Buy", "Liquidated Cross Long",
    "Auto-Deleveraging", …"""
    closed_pnl: Decimal
    start_position: Decimal
    """The signed position (for spot, the balance) before this fill (AF sample `.src.txt`)."""
    crossed: bool
    """True: this fill was the taker (§1.2)."""
    fee: Decimal
    """Negative = rebate (§1.2)."""
    fee_token: str | None
    """Absent in the 2024 ccxt capture, present since."""
    liquidation: FillLiquidation | None

    @property
    def signed_size(self) -> Decimal:
        return self.sz if self.side == "B" else -self.sz

    @property
    def end_position(self) -> Decimal:
        """`startPosition` moved by this fill: a buy adds, a sell subtracts."""
        return self.start_position + self.signed_size

    @property
    def is_spot(self) -> bool:
        """Spot coins are `PURR/USDC` or `@{index}` (§1.1); their `startPosition` is a balance."""
        return self.coin.startswith("@") or "/" in self.coin


def _fill_liquidation(raw: object, name: str) -> FillLiquidation:
    body = kit.mapping(raw, name)
    user = body.get("liquidatedUser")
    method = body.get("method")
    if method not in ("market", "backstop"):
        raise Refused(UNKNOWN_KIND, f"{name}.method={method!r} is neither market nor backstop")
    # The docs' TS type says `number` for markPx; the wire and nktkas send a string (§1.3): both read exactly.
    return FillLiquidation(
        liquidated_user=None if user is None else _address(user, f"{name}.liquidatedUser"),
        mark_px=kit.figure(body.get("markPx"), f"{name}.markPx"),
        method="market" if method == "market" else "backstop",
    )


def parse_user_fill(obj: Any, name: str = "fill") -> Fill:
    """One fill object. `oid` is kept when present; `liquidationMarkPx` (the 2024 field the ccxt sample
    shows, `null` there) is obsolete and ignored (sample `.src.txt`); `builderFee`, `cloid`, `twapId` are not
    read. `startPosition`, `closedPnl`, `dir`, `crossed`, `fee` are in every documented fill and required."""
    fill = kit.mapping(obj, name)
    time_ms = fill.get("time")
    liquidation = fill.get("liquidation")
    oid = fill.get("oid")
    fee_token = fill.get("feeToken")
    return Fill(
        coin=_coin(fill.get("coin"), f"{name}.coin"),
        px=kit.figure(fill.get("px"), f"{name}.px"),
        sz=kit.figure(fill.get("sz"), f"{name}.sz"),
        side=_side(fill.get("side"), f"{name}.side"),
        at=kit.ms_time(time_ms, f"{name}.time"),
        time_ms=kit.integer(time_ms, f"{name}.time"),
        hash=kit.text(fill.get("hash"), f"{name}.hash"),
        tid=_id(fill.get("tid"), f"{name}.tid"),
        oid=None if oid is None else _id(oid, f"{name}.oid"),
        dir=kit.text(fill.get("dir"), f"{name}.dir"),
        closed_pnl=_signed(fill.get("closedPnl"), f"{name}.closedPnl"),
        start_position=_signed(fill.get("startPosition"), f"{name}.startPosition"),
        crossed=_bool(fill.get("crossed"), f"{name}.crossed"),
        fee=_signed(fill.get("fee"), f"{name}.fee"),
        fee_token=None if fee_token is None else kit.text(fee_token, f"{name}.feeToken"),
        liquidation=None if liquidation is None else _fill_liquidation(liquidation, f"{name}.liquidation"),
    )


def parse_user_fills(body: Any) -> list[Fill]:
    """The `userFills` / `userFillsByTime` response: an array of fills, newest first (the AF sample), at
    most 2000 per response (§1.2). One unreadable fill refuses the body."""
    return [parse_user_fill(raw, f"fills[{i}]") for i, raw in enumerate(kit.array(body, "userFills"))]


@dataclass(frozen=True, slots=True)
class UserFills:
    """A WS `userFills` frame: `{isSnapshot?: true, user, fills}`; the first message is a snapshot and
    `isSnapshot` is absent on live pushes (§1.3)."""

    user: str
    is_snapshot: bool
    fills: tuple[Fill, ...]


def parse_user_fills_frame(frame: Any) -> UserFills:
    data = kit.mapping(frame, "userFills frame")
    if data.get("channel") != "userFills":
        raise ValueError(f"channel={data.get('channel')!r} is not userFills")
    body = kit.mapping(data.get("data"), "userFills data")
    snapshot = body.get("isSnapshot", False)
    return UserFills(
        user=_address(body.get("user"), "userFills.user"),
        is_snapshot=_bool(snapshot, "userFills.isSnapshot"),
        fills=tuple(
            parse_user_fill(raw, f"userFills.fills[{i}]")
            for i, raw in enumerate(kit.array(body.get("fills"), "userFills.fills"))
        ),
    )


@dataclass(frozen=True, slots=True)
class WalletTrade:
    """A public trade one watched wallet was in. The public `trades` items carry only `coin, side, px, sz,
    hash, time, tid, users` (§1.3): no `dir`, `closedPnl`, `startPosition`, `oid`, and no liquidation flag."""

    coin: str
    side: Literal["B", "A"]
    """The wallet's side: `users` is `[buyer, seller]` (docs WsTrade, §1.3), so `users[0]` bought (B) and
    `users[1]` sold (A)."""
    px: Decimal
    sz: Decimal
    at: datetime
    time_ms: int
    hash: str
    tid: int
    counterparty: str
    aggressor: Literal["B", "A"]
    """The trade's `side`: "for trades, side is the aggressing side" (docs "Notation", §1.1)."""

    @property
    def crossed(self) -> bool:
        """The wallet was the taker when its side is the aggressing side."""
        return self.side == self.aggressor

    @property
    def signed_size(self) -> Decimal:
        return self.sz if self.side == "B" else -self.sz


def fills_for_wallets(trades_frame: Any, wallets: Iterable[str]) -> list[tuple[str, WalletTrade]]:
    """The trades of a `{"channel":"trades","data":[…]}` frame that involve any of `wallets` (compared in
    lower case), as `(wallet, trade)` in frame order. A wallet on both sides of one trade gets both entries
    (it bought and sold). A trade without `users` (the 2024 ccxt sample predates the field) cannot be
    attributed and refuses the frame, as `watchers.hyperliquid.parse_frame` does."""
    watched = {_address(w, "wallet") for w in wallets}
    frame = kit.mapping(trades_frame, "trades frame")
    if frame.get("channel") != "trades":
        raise ValueError(f"channel={frame.get('channel')!r} is not trades")
    found: list[tuple[str, WalletTrade]] = []
    for i, raw in enumerate(kit.array(frame.get("data"), "trades data")):
        where = f"trades[{i}]"
        item = kit.mapping(raw, where)
        users = item.get("users")
        if not isinstance(users, list) or len(users) != 2:
            raise ValueError(f"{where}.users={str(users)[:120]} is not a [buyer, seller] pair")
        buyer, seller = (_address(u, f"{where}.users") for u in users)
        if buyer not in watched and seller not in watched:
            continue
        time_ms = item.get("time")
        common: dict[str, Any] = {
            "coin": _coin(item.get("coin"), f"{where}.coin"),
            "px": kit.figure(item.get("px"), f"{where}.px"),
            "sz": kit.figure(item.get("sz"), f"{where}.sz"),
            "at": kit.ms_time(time_ms, f"{where}.time"),
            "time_ms": kit.integer(time_ms, f"{where}.time"),
            "hash": kit.text(item.get("hash"), f"{where}.hash"),
            "tid": _id(item.get("tid"), f"{where}.tid"),
            "aggressor": _side(item.get("side"), f"{where}.side"),
        }
        if buyer in watched:
            found.append((buyer, WalletTrade(side="B", counterparty=seller, **common)))
        if seller in watched:
            found.append((seller, WalletTrade(side="A", counterparty=buyer, **common)))
    return found


# ---------------------------------------------------------------------------------------------------------
# Orders
# ---------------------------------------------------------------------------------------------------------

_ZERO_HASH = "0x" + "0" * 64


@dataclass(frozen=True, slots=True)
class OrderFills:
    """The fills of one order that arrived together, summed. A market order crossing several makers is one
    fill per maker (`watchers.hyperliquid_node._Part`), but one trade to a reader."""

    wallet: str
    coin: str
    side: Literal["B", "A"]
    oid: int | None
    hash: str
    fills: tuple[Fill | WalletTrade, ...]
    size: Decimal
    vwap_px: Decimal
    notional_usd: Decimal
    closed_pnl_usd: Decimal | None
    """The sum of `closedPnl`; None when any part is a public trade, which has none."""
    fee: Decimal | None
    first_at: datetime
    last_at: datetime
    start_position: Decimal | None
    """The position before the order: the first fill's `startPosition` in execution order (a buy's fills
    raise it, a sell's lower it); None for public trades."""

    @property
    def signed_size(self) -> Decimal:
        return self.size if self.side == "B" else -self.size

    @property
    def end_position(self) -> Decimal | None:
        return None if self.start_position is None else self.start_position + self.signed_size


def _order_key(wallet: str, fill: Fill | WalletTrade) -> tuple[object, ...]:
    if isinstance(fill, Fill) and fill.oid is not None:
        return (wallet, fill.coin, "oid", fill.oid)
    if fill.hash == _ZERO_HASH:
        # All-zero hashes are shared by unrelated fills (AF sample element 5): such a fill stands alone.
        return (wallet, fill.coin, "tid", fill.tid, fill.time_ms)
    return (wallet, fill.coin, "hash", fill.hash, fill.side)


def group_by_order(fills: Iterable[tuple[str, Fill | WalletTrade]]) -> list[OrderFills]:
    """Fills of one batch grouped per order: same wallet and coin, and the same `oid` where the fill has
    one, else the same `hash` and side (public trades have no `oid`). Groups come in the order their first
    fill arrived. One `oid` with both sides is refused as contradictory (`SIDE_MISMATCH`)."""
    groups: dict[tuple[object, ...], list[Fill | WalletTrade]] = {}
    wallets: dict[tuple[object, ...], str] = {}
    for wallet, fill in fills:
        wallet = _address(wallet, "wallet")
        key = _order_key(wallet, fill)
        part = groups.setdefault(key, [])
        if part and part[0].side != fill.side:
            raise Refused(SIDE_MISMATCH, f"order {key[3]} of {wallet} on {fill.coin} has both sides")
        part.append(fill)
        wallets[key] = wallet
    return [_order(wallets[key], parts) for key, parts in groups.items()]


def _order(wallet: str, parts: list[Fill | WalletTrade]) -> OrderFills:
    first = parts[0]
    size = sum((p.sz for p in parts), Decimal(0))
    notional = sum((p.sz * p.px for p in parts), Decimal(0))
    own = [p for p in parts if isinstance(p, Fill)]
    complete = len(own) == len(parts)
    start: Decimal | None = None
    if complete:
        starts = [p.start_position for p in own]
        start = min(starts) if first.side == "B" else max(starts)
    return OrderFills(
        wallet=wallet,
        coin=first.coin,
        side=first.side,
        oid=first.oid if isinstance(first, Fill) else None,
        hash=first.hash,
        fills=tuple(parts),
        size=size,
        vwap_px=notional / size,
        notional_usd=notional,
        closed_pnl_usd=sum((p.closed_pnl for p in own), Decimal(0)) if complete else None,
        fee=sum((p.fee for p in own), Decimal(0)) if complete else None,
        first_at=min(p.at for p in parts),
        last_at=max(p.at for p in parts),
        start_position=start,
    )


# ---------------------------------------------------------------------------------------------------------
# Position changes
# ---------------------------------------------------------------------------------------------------------


class ChangeKind(StrEnum):
    OPENED = "opened"
    INCREASED = "increased"
    REDUCED = "reduced"
    CLOSED = "closed"
    FLIPPED = "flipped"
    """Long to short or short to long in one step, across zero."""
    UNCHANGED = "unchanged"
    """The same signed size (or flat to flat): nothing to report, named so callers need not pre-check."""


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    before: Decimal
    after: Decimal
    side_before: PositionSide | None
    side_after: PositionSide | None

    @property
    def delta(self) -> Decimal:
        return self.after - self.before


def _side_of(size: Decimal) -> PositionSide | None:
    if size > 0:
        return PositionSide.LONG
    if size < 0:
        return PositionSide.SHORT
    return None


def classify(before: Decimal | None, after: Decimal) -> Change:
    """The kind of change from signed size `before` (None: no position known, read as flat) to `after`
    (`szi` sign: + long, − short, docs "Notation")."""
    start = Decimal(0) if before is None else before
    for value, name in ((start, "before"), (after, "after")):
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"{name}={value!r} is not a finite Decimal")
    was, now = _side_of(start), _side_of(after)
    if start == after:
        kind = ChangeKind.UNCHANGED
    elif was is None:
        kind = ChangeKind.OPENED
    elif now is None:
        kind = ChangeKind.CLOSED
    elif was is not now:
        kind = ChangeKind.FLIPPED
    elif abs(after) > abs(start):
        kind = ChangeKind.INCREASED
    else:
        kind = ChangeKind.REDUCED
    return Change(kind, start, after, was, now)


# ---------------------------------------------------------------------------------------------------------
# Liquidations and ADL
# ---------------------------------------------------------------------------------------------------------

ADL_DIR = "Auto-Deleveraging"
"""Exact string (ConejoCapital ADL_ORDER_IDENTIFICATION_METHODOLOGY.md, §1.2; node sample line 4)."""

LIQUIDATED_DIRS: Mapping[str, PositionSide] = {
    "Liquidated Cross Long": PositionSide.LONG,
    "Liquidated Isolated Long": PositionSide.LONG,
    "Liquidated Cross Short": PositionSide.SHORT,
    "Liquidated Isolated Short": PositionSide.SHORT,
}
"""The `dir` values of a liquidated perp position (§0, §1.2: "Liquidated Cross Long", "Liquidated Isolated
Long"; the Short forms as `watchers.hyperliquid_node` and the public readers it cites match them)."""

_CLOSE_DIRS: Mapping[str, PositionSide] = {"Close Long": PositionSide.LONG, "Close Short": PositionSide.SHORT}
BORROW_DIRS = frozenset({"Backstop Borrow Liquidation", "Partial Borrow Liquidation"})
"""Spot-margin borrow liquidations (`watchers.hyperliquid_node`): no perp position."""
# A fill closes the position opposite its side: a sell (A) closes a long, a buy (B) a short.
_CLOSES: Mapping[str, PositionSide] = {"A": PositionSide.LONG, "B": PositionSide.SHORT}


@dataclass(frozen=True, slots=True)
class LiquidationFacts:
    wallet: str
    cause: Literal["liquidation", "adl"]
    """`adl`: the wallet's profitable position was closed against a bankrupt one; it was NOT liquidated."""
    coin: str
    side: PositionSide
    """The side of the wallet's position that was closed."""
    size: Decimal
    px: Decimal
    notional_usd: Decimal
    method: Literal["market", "backstop"] | None
    """From `liquidation.method`; None when the fill carries no `liquidation` object."""
    mark_px: Decimal | None
    liquidated_user: str | None
    """For ADL: the bankrupt account the wallet was deleveraged against."""
    at: datetime
    time_ms: int
    tid: int
    oid: int | None
    hash: str
    closed_pnl_usd: Decimal
    dir: str


def _closed_side(fill: Fill, wallet: str) -> PositionSide:
    """The side the fill closes, from `side`, checked against the sign of `startPosition`."""
    side = _CLOSES[fill.side]
    start = fill.start_position
    if start == 0 or (start > 0) != (side is PositionSide.LONG):
        raise Refused(SIDE_MISMATCH, f"{fill.coin} fill of {wallet}: side={fill.side} startPosition={start}")
    return side


def _facts(wallet: str, fill: Fill, cause: Literal["liquidation", "adl"], side: PositionSide) -> LiquidationFacts:
    lq = fill.liquidation
    return LiquidationFacts(
        wallet=wallet,
        cause=cause,
        coin=fill.coin,
        side=side,
        size=fill.sz,
        px=fill.px,
        notional_usd=fill.sz * fill.px,
        method=None if lq is None else lq.method,
        mark_px=None if lq is None else lq.mark_px,
        liquidated_user=None if lq is None else lq.liquidated_user,
        at=fill.at,
        time_ms=fill.time_ms,
        tid=fill.tid,
        oid=fill.oid,
        hash=fill.hash,
        closed_pnl_usd=fill.closed_pnl,
        dir=fill.dir,
    )


def liquidation_of(wallet: str, fill: Fill) -> LiquidationFacts | None:
    """Whether `fill`, one of `wallet`'s own fills, liquidated it (cause `liquidation`) or deleveraged it
    (cause `adl`); None for any other fill.

    The `liquidation` object is on every fill of a liquidation trade, the counterparties' too: the book's
    makers ("Open Short" with another `liquidatedUser`, node sample line 2) and the liquidator vault, whose
    own fill even reads `"dir":"Liquidated Cross Long"` with side `B` (node sample line 3). So (§1.2, §1.5,
    `watchers.hyperliquid_node`):

    - `dir == "Auto-Deleveraging"` → ADL, never a liquidation: side from `side` (B closes a short),
      checked against `startPosition`. With `liquidatedUser == wallet` it is refused: the docs name the
      bankrupt side's fill a liquidation, not ADL.
    - `liquidatedUser == wallet` (any case) → liquidation; the side from a "Liquidated …"/"Close …" `dir`,
      which must agree with `side` (a long is closed by a sell), else from `side` and `startPosition`.
    - `liquidatedUser` another account → None (a counterparty), whatever `dir` says.
    - `liquidatedUser` absent (it may be, §1.2), or no `liquidation` object: a liquidation only when `dir`
      is one of `LIQUIDATED_DIRS` *and* the fill closes that side of the wallet's own position (side and
      `startPosition` agree); the vault's takeover fill does not, and gives None.
    - A borrow-liquidation `dir` naming the wallet is refused (`BORROW_LIQUIDATION`): no perp position.
    """
    wallet = _address(wallet, "wallet")
    lq = fill.liquidation
    named = lq.liquidated_user if lq is not None else None
    if fill.dir == ADL_DIR:
        if named == wallet:
            raise Refused(UNKNOWN_KIND, f"ADL fill of {wallet} names {wallet} as liquidated; not described")
        return _facts(wallet, fill, "adl", _closed_side(fill, wallet))
    if named is not None and named != wallet:
        return None
    if fill.dir in BORROW_DIRS:
        if named == wallet:
            raise Refused(BORROW_LIQUIDATION, f"{fill.dir} of {wallet} is a spot borrow, not a perp position")
        return None
    by_dir = LIQUIDATED_DIRS.get(fill.dir)
    if named == wallet:
        by_dir = by_dir or _CLOSE_DIRS.get(fill.dir)
        if by_dir is not None and by_dir is not _CLOSES[fill.side]:
            raise Refused(SIDE_MISMATCH, f"{fill.coin} fill of {wallet}: dir={fill.dir!r} but side={fill.side}")
        return _facts(wallet, fill, "liquidation", _closed_side(fill, wallet))
    if by_dir is None:
        return None
    # No liquidatedUser: the dir alone, and only when this fill closes that side of the wallet's position.
    if (
        by_dir is not _CLOSES[fill.side]
        or fill.start_position == 0
        or (fill.start_position > 0) != (by_dir is PositionSide.LONG)
    ):
        return None
    return _facts(wallet, fill, "liquidation", by_dir)


@dataclass(frozen=True, slots=True)
class LiquidatedPosition:
    coin: str
    size: Decimal
    """`szi`: signed, + long, − short."""

    @property
    def side(self) -> PositionSide:
        return PositionSide.LONG if self.size > 0 else PositionSide.SHORT


@dataclass(frozen=True, slots=True)
class LedgerLiquidation:
    """`delta: {type:"liquidation", liquidatedNtlPos, accountValue, leverageType, liquidatedPositions}`
    (§1.2, docs WsUserNonFundingLedgerUpdates; nktkas `userNonFundingLedgerUpdates.ts`)."""

    account_value_usd: Decimal
    """May be negative; "for isolated positions this is the isolated account value" (§1.2)."""
    leverage_type: Literal["Cross", "Isolated"]
    positions: tuple[LiquidatedPosition, ...]
    liquidated_ntl_pos_usd: Decimal | None
    """On the wire but not in the docs' TS type (§1.2): kept when present, never required."""


OTHER_LEDGER_TYPES = frozenset(
    {
        "deposit",
        "withdraw",
        "internalTransfer",
        "subAccountTransfer",
        "vaultCreate",
        "vaultDeposit",
        "vaultDistribution",
        "vaultWithdraw",
        "vaultLeaderCommission",
        "spotTransfer",
        "accountClassTransfer",
        "spotGenesis",
        "rewardsClaim",
    }
)
"""The other delta types §1.2 lists. Their fields are not described there and are not read."""


@dataclass(frozen=True, slots=True)
class LedgerUpdate:
    at: datetime
    time_ms: int
    hash: str
    type: str
    liquidation: LedgerLiquidation | None
    """Set exactly when `type == "liquidation"`."""


def parse_ledger_update(obj: Any, name: str = "ledgerUpdate") -> LedgerUpdate:
    """One `userNonFundingLedgerUpdates` entry, `{time, hash, delta: {type, …}}` (§1.2). A type the
    research does not list is refused (`UNKNOWN_KIND`): a new kind could be a liquidation."""
    entry = kit.mapping(obj, name)
    time_ms = entry.get("time")
    delta = kit.mapping(entry.get("delta"), f"{name}.delta")
    kind = kit.text(delta.get("type"), f"{name}.delta.type")
    liquidation: LedgerLiquidation | None = None
    if kind == "liquidation":
        liquidation = _ledger_liquidation(delta, f"{name}.delta")
    elif kind not in OTHER_LEDGER_TYPES:
        raise Refused(UNKNOWN_KIND, f"{name}.delta.type={kind[:60]!r} is not a documented ledger update")
    return LedgerUpdate(
        at=kit.ms_time(time_ms, f"{name}.time"),
        time_ms=kit.integer(time_ms, f"{name}.time"),
        hash=kit.text(entry.get("hash"), f"{name}.hash"),
        type=kind,
        liquidation=liquidation,
    )


def _ledger_liquidation(delta: Mapping[str, Any], name: str) -> LedgerLiquidation:
    leverage = delta.get("leverageType")
    if leverage not in ("Cross", "Isolated"):
        raise Refused(UNKNOWN_KIND, f"{name}.leverageType={leverage!r} is neither Cross nor Isolated")
    positions: list[LiquidatedPosition] = []
    for i, raw in enumerate(kit.array(delta.get("liquidatedPositions"), f"{name}.liquidatedPositions")):
        where = f"{name}.liquidatedPositions[{i}]"
        item = kit.mapping(raw, where)
        size = _signed(item.get("szi"), f"{where}.szi")
        if size == 0:
            raise Refused(BAD_FIGURE, f"{where}.szi is zero")
        positions.append(LiquidatedPosition(_coin(item.get("coin"), f"{where}.coin"), size))
    if not positions:
        raise ValueError(f"{name}.liquidatedPositions is empty")
    ntl = delta.get("liquidatedNtlPos")
    return LedgerLiquidation(
        account_value_usd=_signed(delta.get("accountValue"), f"{name}.accountValue"),
        leverage_type="Cross" if leverage == "Cross" else "Isolated",
        positions=tuple(positions),
        liquidated_ntl_pos_usd=None if ntl is None else _not_negative(ntl, f"{name}.liquidatedNtlPos"),
    )


# ---------------------------------------------------------------------------------------------------------
# Liquidation distance
# ---------------------------------------------------------------------------------------------------------


def distance(position: Position, mark_px: Decimal) -> Decimal | None:
    """How far mark may move against the position before `liquidationPx`, as a fraction of mark:
    `(mark − liq) / mark` for a long, `(liq − mark) / mark` for a short. Negative once mark is past it.
    None when the API gives no liquidation price (`null`, §1.2). §1.5: liquidation happens on mark price."""
    if not isinstance(mark_px, Decimal) or not mark_px.is_finite() or mark_px <= 0:
        raise ValueError(f"mark_px={mark_px!r} is not a positive Decimal")
    if position.liquidation_px is None:
        return None
    gap = mark_px - position.liquidation_px
    return (gap if position.size > 0 else -gap) / mark_px


DEFAULT_THRESHOLDS = (Decimal("0.10"), Decimal("0.05"), Decimal("0.02"))
DEFAULT_HYSTERESIS = Decimal("0.25")


def _fraction(value: object, name: str) -> Decimal:
    number = parse_decimal(value, name)
    if not 0 < number < 1:
        raise ValueError(f"{name}={number} is not a fraction between 0 and 1")
    return number


@dataclass(frozen=True, slots=True)
class DistanceAlarm:
    """Alerts once per threshold as the distance to liquidation falls through it, and re-arms a threshold
    only after the distance rises above `threshold × (1 + hysteresis)`, so a mark hovering at a threshold
    alerts once. Immutable: `update` returns the next state; `to_dict`/`from_dict` persist it as JSON."""

    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    hysteresis: Decimal = DEFAULT_HYSTERESIS
    armed: frozenset[Decimal] = field(default=frozenset(DEFAULT_THRESHOLDS))

    def __post_init__(self) -> None:
        if not self.thresholds:
            raise ValueError("a DistanceAlarm needs at least one threshold")
        for t in self.thresholds:
            _fraction(t, "threshold")
        if list(self.thresholds) != sorted(set(self.thresholds), reverse=True):
            raise ValueError(f"thresholds {[str(t) for t in self.thresholds]} are not distinct and descending")
        if not isinstance(self.hysteresis, Decimal) or not self.hysteresis.is_finite() or self.hysteresis < 0:
            raise ValueError(f"hysteresis={self.hysteresis!r} is not a non-negative Decimal")
        if not self.armed <= set(self.thresholds):
            raise ValueError(f"armed {sorted(self.armed)} are not all thresholds")

    @classmethod
    def new(
        cls, thresholds: Sequence[Decimal] = DEFAULT_THRESHOLDS, hysteresis: Decimal = DEFAULT_HYSTERESIS
    ) -> DistanceAlarm:
        """Every threshold armed."""
        ordered = tuple(thresholds)
        return cls(ordered, hysteresis, frozenset(ordered))

    def update(self, distance: Decimal | None) -> tuple[DistanceAlarm, Decimal | None]:
        """The next state, and the tightest threshold newly crossed (distance ≤ threshold) or None. A jump
        through several thresholds alerts once, at the tightest, and disarms all it crossed. None (no
        liquidation price) changes nothing."""
        state, crossed = self.crossings(distance)
        return state, (crossed[-1] if crossed else None)

    def crossings(self, distance: Decimal | None) -> tuple[DistanceAlarm, list[Decimal]]:
        """The next state, and every threshold newly crossed, widest first: where chats warn at different
        thresholds, each hears the one it chose even when the mark jumps through several at once."""
        if distance is None:
            return self, []
        if not isinstance(distance, Decimal) or not distance.is_finite():
            raise ValueError(f"distance={distance!r} is not a finite Decimal")
        crossed = [t for t in self.thresholds if t in self.armed and distance <= t]
        armed = set(self.armed) - set(crossed)
        armed |= {t for t in self.thresholds if distance > t * (1 + self.hysteresis)}
        return DistanceAlarm(self.thresholds, self.hysteresis, frozenset(armed)), crossed

    def reset(self) -> DistanceAlarm:
        """Every threshold armed again (a position closed and reopened starts afresh)."""
        return DistanceAlarm(self.thresholds, self.hysteresis, frozenset(self.thresholds))

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": [str(t) for t in self.thresholds],
            "hysteresis": str(self.hysteresis),
            "armed": [str(t) for t in self.thresholds if t in self.armed],
        }

    @classmethod
    def from_dict(cls, data: Any) -> DistanceAlarm:
        body = kit.mapping(data, "DistanceAlarm")
        thresholds = tuple(
            _fraction(t, f"thresholds[{i}]") for i, t in enumerate(kit.array(body.get("thresholds"), "thresholds"))
        )
        hysteresis = parse_decimal(body.get("hysteresis"), "hysteresis")
        armed = frozenset(parse_decimal(t, "armed") for t in kit.array(body.get("armed"), "armed"))
        return cls(thresholds, hysteresis, armed)


# ---------------------------------------------------------------------------------------------------------
# Request weights
# ---------------------------------------------------------------------------------------------------------

WEIGHT_PER_MIN = 1200
"""REST, per IP, all requests together (docs "Rate limits and user limits", §1.4)."""
BUDGETED_PER_MIN = 1150
"""What the bot lets itself send of those: the budget counts a request when it is sent, the venue when it
arrives, so a window the budget keeps full to the last unit can be over by a request at the venue
(bench/whales.py saw 1,216 at a full budget); 50 in reserve covers that."""

WEIGHTS: Mapping[str, int] = {
    # Weight 2 (§1.4: "l2Book, allMids, clearinghouseState, orderStatus, spotClearinghouseState,
    # exchangeStatus").
    "clearinghouseState": 2,
    "spotClearinghouseState": 2,
    "allMids": 2,
    "l2Book": 2,
    "orderStatus": 2,
    "exchangeStatus": 2,
    # "All other documented info requests have weight 20" (§1.4, §8.5: meta, perpDexs, vaultDetails; §1.2:
    # userNonFundingLedgerUpdates 20, metaAndAssetCtxs 20). spotMeta: one newer docs page says 2, the
    # rate-limits page 20 (§8.5, §8.10): budgeted at 20.
    "meta": 20,
    "metaAndAssetCtxs": 20,
    "perpDexs": 20,
    "spotMeta": 20,
    "vaultDetails": 20,
    "userNonFundingLedgerUpdates": 20,
    "userFills": 20,
    "userFillsByTime": 20,
    "userRole": 60,
}

ITEMS_PER_EXTRA_WEIGHT = 20
"""§1.4: `userFills` and `userFillsByTime` (among others) carry "extra weight per 20 items returned"."""
EXTRA_WEIGHT_PER_BLOCK = 1
"""The docs say "per 20 items" without the amount or the rounding; 1 per started block of 20 is this
module's budgeting assumption (an upper bound if the venue rounds down), not a documented figure."""
PER_ITEM_WEIGHTED = frozenset({"userFills", "userFillsByTime"})


def weight(request_type: str, items_returned: int = 0) -> int:
    """The weight to budget for one info request of `request_type` that returned `items_returned` items.
    A type not in `WEIGHTS` raises KeyError: its weight is not looked up here, so it is not guessed."""
    base = WEIGHTS[request_type]
    if items_returned < 0:
        raise ValueError(f"items_returned={items_returned} is negative")
    if request_type not in PER_ITEM_WEIGHTED:
        return base
    return base + EXTRA_WEIGHT_PER_BLOCK * math.ceil(items_returned / ITEMS_PER_EXTRA_WEIGHT)
