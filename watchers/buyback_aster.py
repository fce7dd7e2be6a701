"""Aster's buyback, read as the spot fills of its public buyback wallet on Aster Chain.

The only source of the request and its answer is DefiLlama's adapter (DefiLlama/dimension-adapters:
fees/aster-spot/index.ts at e7346b0e, quoted in research/unlocks-buybacks-tge.md §2.2); no official Aster doc
describes it. JSON-RPC `POST https://tapi.asterdex.com/info`, method `aster_spotUserFills`, params
`[wallet, null, fromMs, toMs - 1, "latest"]`, answer `result.fills[]` of `{symbol, side:"BUY"|"SELL", price:str,
qty:str, time:ms}`, at most `CAP` records a response ("RPC hard cap"). The adapter counts `ASTERUSDT` BUY fills at
`qty × price` USD; so does this module (USDT counted as USD).

Why windows and halving: a response at the cap is incomplete and the adapter does not say which fills it drops,
so a capped window is read again at half its width rather than trusting any part of it; a window under the cap
is complete, and only then is the cursor (a time boundary) moved past it. A window therefore never ends inside
a millisecond whose fills were not all read.

Why derived keys: a fill carries no id. A fill's key is its time, symbol, side, price and qty plus its ordinal
among identical fills of that millisecond; every fill of a millisecond is always read in one window, so a
replayed window yields the same keys and counts nothing twice.

Left open by the source: the order of `fills` (sorted here), whether `time` may be a string (refused), and how
soon after a fill the RPC lists it: the cursor stays `SETTLE_MS` behind now so a late-listed fill is not passed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from perpwatch.buybacks import Buy, Fetched, ProgrammeKind, SourceContext
from perpwatch.events import parse_decimal
from watchers.poller import Request

URL_SETTING = "aster_chain_rpc_url"
DEFAULT_URLS: dict[str, str] = {URL_SETTING: "https://tapi.asterdex.com/info"}

CAP = 1000
"""Records per response (the adapter's `MAX_RECORDS`, "RPC hard cap per response")."""

WINDOW_MS = 3_600_000
"""The first window's width; it doubles while windows come back well under the cap, up to `MAX_WINDOW_MS`."""
MAX_WINDOW_MS = 86_400_000
SETTLE_MS = 60_000
MAX_REQUESTS = 12
"""Requests one step may make while halving a capped window, so one step stays bounded."""

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
_ANY_SYMBOL = re.compile(r"^[A-Za-z0-9._/-]{1,40}$")
"""What a fill of another symbol may look like: it is not counted, but must not be mistaken for ours."""
_PARAMS = ("wallet", "symbol", "start_ms")
_SIDES = ("BUY", "SELL")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={str(value)[:60]!r} is not a time in ms")
    return value


def parse_fills(body: object, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
    """The fills of one `aster_spotUserFills` answer, checked, sorted by time (shape: the aster-spot adapter).

    A JSON-RPC `error` is raised with its code and message; a fill outside the window asked for is refused,
    since counting it would let two windows count it."""
    if not isinstance(body, dict):
        raise ValueError(f"aster_spotUserFills answer is not an object: {str(body)[:120]}")
    if body.get("error") is not None:
        error = body["error"]
        if isinstance(error, dict):
            raise ValueError(f"aster_spotUserFills error {error.get('code')}: {str(error.get('message'))[:200]}")
        raise ValueError(f"aster_spotUserFills error: {str(error)[:200]}")
    result = body.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("fills"), list):
        raise ValueError(f"aster_spotUserFills result has no fills list: {str(result)[:120]}")
    fills = []
    for i, raw in enumerate(result["fills"]):
        where = f"fills[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} is not an object")
        symbol, side = raw.get("symbol"), raw.get("side")
        if not isinstance(symbol, str) or not _ANY_SYMBOL.match(symbol):
            raise ValueError(f"{where}.symbol={str(symbol)[:60]!r} is not a symbol")
        if side not in _SIDES:
            raise ValueError(f"{where}.side={str(side)[:60]!r} is neither BUY nor SELL")
        time = _ms(raw.get("time"), f"{where}.time")
        if not from_ms <= time < to_ms:
            raise ValueError(f"{where}.time={time} is outside the window asked for [{from_ms}, {to_ms})")
        price = parse_decimal(raw.get("price"), f"{where}.price")
        qty = parse_decimal(raw.get("qty"), f"{where}.qty")
        if price <= 0 or qty <= 0:
            raise ValueError(f"{where} has price={price} qty={qty}; a fill has both above 0")
        fills.append({"symbol": symbol, "side": side, "price": price, "qty": qty, "time": time})
    fills.sort(key=lambda f: (f["time"], f["symbol"], f["side"], f["price"], f["qty"]))
    return fills


def fill_keys(fills: list[dict[str, Any]]) -> list[str]:
    """One key per fill, stable for a replayed window: identical fills of one ms are told apart by ordinal."""
    seen: Counter[tuple[object, ...]] = Counter()
    keys = []
    for f in fills:
        ident = (f["time"], f["symbol"], f["side"], _plain(f["price"]), _plain(f["qty"]))
        keys.append("fill:" + ":".join(str(part) for part in ident) + f":{seen[ident]}")
        seen[ident] += 1
    return keys


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


class AsterChainFills:
    """`aster_chain_fills`: one wallet's BUY fills of one symbol on Aster Chain."""

    kind: ProgrammeKind = "aster_chain_fills"

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise ValueError(f"unknown parameter {', '.join(unknown)}; this kind takes {', '.join(_PARAMS)}")
        wallet = params.get("wallet")
        if not isinstance(wallet, str) or not _ADDRESS.match(wallet):
            raise ValueError(f"wallet must be a 0x address, got {str(wallet)[:60]!r}")
        symbol = params.get("symbol", "ASTERUSDT")
        if not isinstance(symbol, str) or not _SYMBOL.match(symbol.upper()):
            raise ValueError(f"symbol must be a spot symbol like ASTERUSDT, got {str(symbol)[:60]!r}")
        start = params.get("start_ms")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start_ms must be a time in Unix milliseconds, got {str(start)[:60]!r}")
        return {"wallet": wallet.lower(), "symbol": symbol.upper(), "start_ms": start}

    async def fetch(self, ctx: SourceContext) -> Fetched:
        params = self.validate(ctx.programme.params)
        url = ctx.urls.get(URL_SETTING, DEFAULT_URLS[URL_SETTING])
        from_ms, window = self._cursor(ctx.cursor, params["start_ms"])
        until_ms = int(ctx.now.timestamp() * 1000) - SETTLE_MS
        if from_ms >= until_ms:
            return Fetched(buys=(), cursor={"from_ms": from_ms, "window_ms": window})
        for _ in range(MAX_REQUESTS):
            to_ms = min(from_ms + window, until_ms)
            body = await ctx.get_json(
                Request(
                    url,
                    "POST",
                    json_body={
                        "id": 1,
                        "jsonrpc": "2.0",
                        "method": "aster_spotUserFills",
                        "params": [params["wallet"], None, from_ms, to_ms - 1, "latest"],
                    },
                )
            )
            fills = parse_fills(body, from_ms, to_ms)
            if len(fills) < CAP:
                break
            if to_ms - from_ms <= 1:
                raise ValueError(f"{len(fills)} fills in the one millisecond {from_ms}: the cap hides the rest")
            window = max(1, (to_ms - from_ms) // 2)
        else:
            # Still capped after every halving this step may make: keep the narrowed window for the next step.
            return Fetched(buys=(), cursor={"from_ms": from_ms, "window_ms": window}, more=True)
        buys = [
            Buy(
                key=key,
                start=_EPOCH + timedelta(milliseconds=f["time"]),
                end=_EPOCH + timedelta(milliseconds=f["time"]),
                tokens=f["qty"],
                usd=f["price"] * f["qty"],
                basis="measured",
            )
            for f, key in zip(fills, fill_keys(fills), strict=True)
            if f["symbol"] == params["symbol"] and f["side"] == "BUY"
        ]
        if len(fills) < CAP // 4 and to_ms - from_ms == window:
            window = min(window * 2, MAX_WINDOW_MS)
        return Fetched(buys=buys, cursor={"from_ms": to_ms, "window_ms": window}, more=to_ms < until_ms)

    @staticmethod
    def _cursor(cursor: object, start_ms: int) -> tuple[int, int]:
        if cursor is None:
            return start_ms, WINDOW_MS
        if not isinstance(cursor, dict):
            raise ValueError(f"stored cursor {str(cursor)[:80]} is not an aster_chain_fills cursor")
        from_ms, window = cursor.get("from_ms"), cursor.get("window_ms", WINDOW_MS)
        return _ms(from_ms, "cursor from_ms"), max(1, min(_ms(window, "cursor window_ms"), MAX_WINDOW_MS))


SOURCE = AsterChainFills()
