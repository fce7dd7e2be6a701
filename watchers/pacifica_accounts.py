"""A Pacifica account's positions, from the public `positions?account=` endpoint (pure: no I/O).

Facts (`/work/shared/research/exchange-apis.md` §5.2, §8.4; sample `payloads/pacifica_rest_positions_docs.json`
and its `.src.txt`, the official docs' "Get positions" example):

- `GET https://api.pacifica.fi/api/v1/positions?account=<address>`, no auth or signature (§5.2). Accounts are
  Solana base58 addresses (§5.2: the trades stream's `u` is "account (Solana base58)").
- Envelope `{"success": true, "data": [...], "error": null, "code": null}` (§5.2, §8.4); the sample also has
  a top-level `last_order_id`, not read.
- `data[]`: `symbol` (bare base, `AAVE`), `side` `"bid"` (long) | `"ask"` (short), `amount` (base, str-dec),
  `entry_price` (str-dec), `margin` (str-dec, "only shown for isolated margin"), `funding` (str-dec),
  `isolated` (bool), `created_at`, `updated_at` (ms).
- **No liquidation price** is returned (§5.2, the sample's `.src.txt`), nor a mark, a position value, an
  unrealised PnL or a leverage.
- Limits: a credit system over 60 s; an unidentified IP has 100 credits (older revisions 125 or 300),
  "heavy GET requests 3–12" credits (§5.2). Which class `positions` belongs to is not stated.

Left open by the docs, and what this module does about each:

- Liquidation price: None on every position. `hl_account.distance` then gives None, so no distance warning
  is ever made for Pacifica; the watcher's position alerts say Pacifica publishes none.
- Position value: with no mark in the answer, the value is `amount × entry_price`, the position's value at
  entry. It stands in `position_value_usd` (which for Hyperliquid is |size| × mark) because the book needs a
  USD figure for its alerts and thresholds; the alerts' note says it is valued at entry.
- Unrealised PnL, return on equity, leverage and the market's max leverage: None (not published).
- `margin` on a cross position: the docs show it only for isolated ones (the sample's cross position has
  `"0"`); it is read as the margin used only when `isolated` is true, and may be absent otherwise.
- `funding` is validated but not kept: `Position` has no field for it and no alert shows it.
- A zero `amount` is not described (the endpoint lists open positions): refused. One symbol twice too.
- An error answer (`success` false) is not shown in the docs; its `error`/`code` are quoted in the refusal.
- The answer has no server time: a snapshot is dated by the caller's clock at fetch time.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from perpwatch.events import is_solana_address, parse_decimal
from watchers import pacifica
from watchers import venuekit as kit
from watchers.hl_account import AccountSnapshot, Position
from watchers.validate import BAD_FIGURE, Refused

POSITIONS_URL = "https://api.pacifica.fi/api/v1/positions"
"""§5.2: `GET /positions?account=<addr>` on the REST base `https://api.pacifica.fi/api/v1`."""
REQUESTS_PER_MIN = pacifica.STREAM.budget_per_min
"""The host's request budget as `watchers.pacifica` declares it (20): 100 credits a minute for an unidentified
IP at up to 5 credits a request (§5.2; the credit class of each GET is not stated)."""
NO_LIQUIDATION_PRICE = (
    "Pacifica publishes no liquidation price for positions, so no distance to liquidation is shown or warned "
    "of; value at entry price (no mark in Pacifica's positions)."
)
"""The note on every Pacifica position alert."""

_SIDES = {"bid": 1, "ask": -1}


def params(account: str) -> dict[str, str]:
    """The query of one positions lookup by its Solana account address."""
    if not is_solana_address(account):
        raise ValueError(f"{account[:60]!r} is not a Solana (base58, 32-byte) address")
    return {"account": account}


def _position(raw: object, name: str) -> Position:
    p = kit.mapping(raw, name)
    symbol = kit.symbol(p.get("symbol"), f"{name}.symbol")
    side = p.get("side")
    if side not in _SIDES:
        raise ValueError(f"{name}.side={side!r} is neither bid (long) nor ask (short)")
    amount = kit.figure(p.get("amount"), f"{name}.amount")  # zero or negative: refused
    entry = kit.figure(p.get("entry_price"), f"{name}.entry_price")
    isolated = p.get("isolated")
    if not isinstance(isolated, bool):
        raise ValueError(f"{name}.isolated={isolated!r} is not a boolean")
    margin: Decimal | None = None
    if isolated or p.get("margin") is not None:
        try:
            margin = parse_decimal(p.get("margin"), f"{name}.margin")
        except ValueError as exc:
            raise Refused(BAD_FIGURE, str(exc)) from None
        if margin < 0:
            raise Refused(BAD_FIGURE, f"{name}.margin={p.get('margin')!r} is negative")
    try:
        parse_decimal(p.get("funding"), f"{name}.funding")  # validated, not kept (module docstring)
    except ValueError as exc:
        raise Refused(BAD_FIGURE, str(exc)) from None
    kit.ms_time(p.get("created_at"), f"{name}.created_at")
    kit.ms_time(p.get("updated_at"), f"{name}.updated_at")
    return Position(
        coin=symbol,
        dex="",
        size=amount * _SIDES[str(side)],
        entry_px=entry,
        position_value_usd=amount * entry,  # at entry: the answer has no mark (module docstring)
        unrealized_pnl_usd=None,  # not published
        return_on_equity=None,  # not published
        leverage=None,  # not published (`isolated` alone gives no value for `Leverage`)
        liquidation_px=None,  # not published: never computed here
        margin_used_usd=margin if isolated else None,
        max_leverage=None,  # a market figure (`/info`), not in this answer
    )


def parse_positions(body: Any, *, at: datetime) -> AccountSnapshot:
    """The answer to `positions?account=…` as one snapshot of the account's only (main) book, dated `at`.
    `success` other than true, or any unreadable field, raises ValueError (a `Refused` for a figure or a
    symbol) naming the field."""
    data = kit.mapping(body, "positions")
    if data.get("success") is not True:
        raise ValueError(
            f"success={data.get('success')!r}: error={str(data.get('error'))[:120]!r} code={data.get('code')!r}"
        )
    positions = tuple(_position(raw, f"data[{i}]") for i, raw in enumerate(kit.array(data.get("data"), "data")))
    coins = [p.coin for p in positions]
    if len(set(coins)) != len(coins):
        raise ValueError(f"data lists a symbol twice: {sorted(coins)}")
    return AccountSnapshot(
        dex="",
        at=at,
        margin_summary=None,
        cross_margin_summary=None,
        cross_maintenance_margin_used_usd=None,
        withdrawable_usd=None,
        positions=positions,
        equity_usd=None,  # `account?account=` has it (§5.2); this answer does not
    )
