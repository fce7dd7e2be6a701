"""A Lighter account's positions, from the public `account` endpoint by L1 address (pure: no I/O).

Facts (`/work/shared/research/exchange-apis.md` §4 and §8.3; field names from the official SDK's models,
elliottech/lighter-python `docs/DetailedAccounts.md`, `docs/DetailedAccount.md`, `docs/AccountPosition.md`):

- `GET https://mainnet.zklighter.elliot.ai/api/v1/account?by=l1_address&value=<0x address>`, no auth (§4).
  The answer is `DetailedAccounts{code:int, message?, total:int, accounts:[DetailedAccount], next_cursor?}`.
- `DetailedAccount` carries `index` (int), `l1_address` (str), `total_asset_value` (str-dec), `collateral`
  (str-dec) and `positions:[AccountPosition]`, among others not read here.
- `AccountPosition`: `market_id:int, symbol, sign:int (1 long, −1 short), position` (absolute size, str-dec),
  `avg_entry_price, position_value, unrealized_pnl, realized_pnl, liquidation_price` (str-dec),
  `margin_mode:int, allocated_margin` (§4).
- Errors use the `ResultCode` shape `{"code": <int>, "message": "<text>"}` (§8.3); success is `code` 200.
- Limits: a standard account gets 60 requests a rolling minute per IP (unweighted, §4, §8.3).

Left open by the docs, and what this module does about each:

- Whether an address without a Lighter account answers `accounts: []`, HTTP 400/404 or a `ResultCode`: an
  empty list (or `total` 0) is "no account" here (`parse_accounts` returns `[]`); the watcher also takes a
  4xx whose text says "not found" as no account (unverified on the wire).
- One L1 address may own several accounts (sub-accounts). Their positions must not be summed, so each is its
  own snapshot: the lowest `index` as the main one (dex `""`, coins bare, `ETH`), every other as dex
  `"<index>"` with coins `"<index>:ETH"`, the way Hyperliquid names a HIP-3 dex's coins. Which account the
  venue calls the main one is not documented; the lowest index is only a stable naming choice.
- Rows with `position` 0 (markets the account once traded, as third-party readers of this endpoint filter
  out) are not positions and are skipped. On such a row `sign` is not described, so any of −1, 0, 1 is let
  through; on an open row it must be 1 or −1.
- `liquidation_price` "0": not described. Read as a price of zero it would put a short *past* liquidation
  and raise a false alarm, so it is taken as "no liquidation price given" (None): no distance is computed.
- `position_value`: the docs give no sign convention; its magnitude is taken (the book needs |size| × mark).
- `margin_mode`'s values are not in the research, and the answer states no leverage or per-position margin:
  `leverage`, `margin_used_usd`, `return_on_equity` and `max_leverage` stay None rather than being derived
  from `initial_margin_fraction` (whose unit, percent or fraction, is not documented either).
- The response carries no server time the docs explain (`transaction_time` has no unit): a snapshot is
  dated by the caller's clock at fetch time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from perpwatch.events import parse_decimal
from watchers import lighter
from watchers import venuekit as kit
from watchers.hl_account import AccountSnapshot, Position
from watchers.validate import BAD_FIGURE, Refused

ACCOUNT_URL = "https://mainnet.zklighter.elliot.ai/api/v1/account"
"""§4: `account?by=index|l1_address&value=…`, on the same REST base as `orderBooks`."""
REQUESTS_PER_MIN = lighter.STREAM.budget_per_min
"""§4: a standard account's 60 requests per rolling minute per IP (unweighted): the host's whole budget, the
figure `watchers.lighter` declares for the same host."""

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def params(address: str) -> dict[str, str]:
    """The query of one account lookup by its L1 (EVM) address."""
    if not _ADDRESS.match(address):
        raise ValueError(f"{address[:60]!r} is not an 0x L1 address")
    return {"by": "l1_address", "value": address}


def _signed(value: object, name: str) -> Decimal:
    try:
        return parse_decimal(value, name)
    except ValueError as exc:
        raise Refused(BAD_FIGURE, str(exc)) from None


def _not_negative(value: object, name: str) -> Decimal:
    number = _signed(value, name)
    if number < 0:
        raise Refused(BAD_FIGURE, f"{name}={value!r} is negative")
    return number


def _position(raw: object, dex: str, name: str) -> Position | None:
    p = kit.mapping(raw, name)
    kit.integer(p.get("market_id"), f"{name}.market_id")  # read so a malformed row is refused, not used
    symbol = kit.symbol(p.get("symbol"), f"{name}.symbol")
    size = _not_negative(p.get("position"), f"{name}.position")
    sign = kit.integer(p.get("sign"), f"{name}.sign")
    if size == 0:
        if sign not in (-1, 0, 1):
            raise ValueError(f"{name}.sign={sign!r} is not -1, 0 or 1")
        return None  # a market once traded, nothing held
    if sign not in (1, -1):
        raise ValueError(f"{name}.sign={sign!r} is neither 1 (long) nor -1 (short) on an open position")
    liquidation = _not_negative(p.get("liquidation_price"), f"{name}.liquidation_price")
    return Position(
        coin=f"{dex}:{symbol}" if dex else symbol,
        dex=dex,
        size=size if sign == 1 else -size,
        entry_px=kit.figure(p.get("avg_entry_price"), f"{name}.avg_entry_price"),
        position_value_usd=abs(_signed(p.get("position_value"), f"{name}.position_value")),
        unrealized_pnl_usd=_signed(p.get("unrealized_pnl"), f"{name}.unrealized_pnl"),
        return_on_equity=None,  # not published
        leverage=None,  # not published; margin_mode's values are not documented
        liquidation_px=None if liquidation == 0 else liquidation,  # "0": none given (module docstring)
        margin_used_usd=None,  # no per-position margin for cross; allocated_margin's mode is not documented
        max_leverage=None,  # a market figure, not in the account answer
    )


def _account(raw: object, dex: str, at: datetime, name: str) -> AccountSnapshot:
    account = kit.mapping(raw, name)
    positions: list[Position] = []
    for i, row in enumerate(kit.array(account.get("positions"), f"{name}.positions")):
        position = _position(row, dex, f"{name}.positions[{i}]")
        if position is not None:
            positions.append(position)
    coins = [p.coin for p in positions]
    if len(set(coins)) != len(coins):
        raise ValueError(f"{name}.positions lists a market twice: {sorted(coins)}")
    return AccountSnapshot(
        dex=dex,
        at=at,
        margin_summary=None,  # Lighter has no Hyperliquid-style margin summary
        cross_margin_summary=None,
        cross_maintenance_margin_used_usd=None,
        withdrawable_usd=None,
        positions=tuple(positions),
        equity_usd=_signed(account.get("total_asset_value"), f"{name}.total_asset_value"),
    )


def parse_accounts(body: Any, *, address: str, at: datetime) -> list[AccountSnapshot]:
    """The answer to `account?by=l1_address&value=address`: one snapshot per account the address owns (the
    lowest `index` first, as dex `""`), or `[]` when the venue lists none. A `code` other than 200, an
    account of another address, an index twice or any unreadable field raises ValueError (a `Refused` for a
    figure or a symbol) naming the field."""
    data = kit.mapping(body, "account")
    code = data.get("code")
    if code != 200:
        raise ValueError(f"code={code!r} is not 200: {str(data.get('message'))[:120]}")
    raw_accounts = kit.array(data.get("accounts"), "accounts")
    total = data.get("total")
    if total is not None:
        kit.integer(total, "total")
    wanted = address.lower()
    indexed: dict[int, Mapping[str, Any]] = {}
    for i, raw in enumerate(raw_accounts):
        account = kit.mapping(raw, f"accounts[{i}]")
        index = kit.integer(account.get("index"), f"accounts[{i}].index")
        if index < 0:
            raise ValueError(f"accounts[{i}].index={index} is negative")
        owner = kit.text(account.get("l1_address"), f"accounts[{i}].l1_address")
        if owner.lower() != wanted:
            raise ValueError(f"accounts[{i}].l1_address={owner[:60]!r} is not the address asked for")
        if index in indexed:
            raise ValueError(f"accounts lists index {index} twice")
        indexed[index] = account
    snapshots = []
    for n, index in enumerate(sorted(indexed)):
        dex = "" if n == 0 else str(index)
        snapshots.append(_account(indexed[index], dex, at, f"accounts[index={index}]"))
    return snapshots
