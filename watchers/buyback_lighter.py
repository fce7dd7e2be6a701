"""Lighter's LIT buyback, read as the trades of the treasury account in the explorer's account logs.

Request and rule from DefiLlama's adapter (DefiLlama/dimension-adapters:fees/lighterv2/index.ts at e7346b0e):
`GET https://explorer.elliot.ai/api/accounts/{account}/logs?pub_data_type=Trade&limit=&offset=`, a JSON
array, newest first; a log's `time` (ISO string) and `pubdata.trade_pubdata` `{market_index:int,
is_taker_ask:0|1, price:str, size:str, maker_account_index, taker_account_index}`. The treasury buys when it is
the taker of a trade whose taker bids (how it bought before Feb 2026) or the maker of one whose taker
asks (after); both are counted whatever the date, as the adapter does. USD is
`price × size` (the LIT/USDC market, USDC counted as USD).

Lighter's own docs page for the endpoint (https://apidocs.lighter.xyz/reference/logs) adds: the bounds of `limit`
(`LIMIT` is the largest), the log's `hash`, `time` with microseconds, a trade also arriving as
`pubdata.trade_pubdata_with_funding` (read like `trade_pubdata`), account indexes shown only as a placeholder
(an int or a digit string is accepted), and a rate limit of its own.

Why this cursor: offset paging of a newest-first list shifts while it is read (a new trade pushes every log one
place down), so a page may repeat logs of the page before but never skips one. The durable cursor is the time
of the newest log counted; a scan pages back from the first page until it reaches a log older than that, and a long
scan (the first one reads the whole history) keeps its offset in the cursor between steps. Repeated logs are
harmless: a trade's key is its tx hash, time, market, price, size and both accounts, the same on every read.

Left open by the sources: no trade id is documented, so two identical trades in one transaction would share a
key and count once; the docs list `status` (`executed`) but not which statuses a trade log can have, and the
adapter counts every trade log, so this module does too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from perpwatch.buybacks import Buy, Fetched, ProgrammeKind, SourceContext
from perpwatch.events import parse_decimal
from watchers.poller import HttpStatusError, RateLimited, Request

log = logging.getLogger(__name__)

URL_SETTING = "lighter_explorer_url"
DEFAULT_URLS: dict[str, str] = {URL_SETTING: "https://explorer.elliot.ai"}

LIMIT = 100
"""Logs a page (the adapter's `MAX_LOGS_PER_REQUEST`; the docs' maximum)."""
MAX_PAGES = 5
"""Pages one step reads before it stores the scan and asks to go on: one step stays bounded."""

_PARAMS = ("account_index", "market_index")
_HASH = re.compile(r"^(0x)?[0-9a-fA-F]{16,128}$")


def _index(value: object, name: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={str(value)[:60]!r} is not an index")
    return value


def _time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name}={str(value)[:60]!r} is not an ISO time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}={value[:60]!r} is not an ISO time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name}={value[:60]!r} has no timezone")
    return moment


def parse_logs(body: object) -> list[tuple[datetime, dict[str, Any] | None, str]]:
    """`(time, trade or None, hash)` per log of one page, checked newest first (shape: the lighterv2 adapter and
    the docs page). A log that is not a trade keeps its place in time but yields no trade."""
    if not isinstance(body, list):
        raise ValueError(f"account logs answer is not a list: {str(body)[:120]}")
    out: list[tuple[datetime, dict[str, Any] | None, str]] = []
    for i, raw in enumerate(body):
        where = f"logs[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} is not an object")
        at = _time(raw.get("time"), f"{where}.time")
        if out and at > out[-1][0]:
            raise ValueError(f"{where}.time={raw.get('time')} is newer than the log before it; pages are newest first")
        tx = raw.get("hash")
        if not isinstance(tx, str) or not _HASH.match(tx):
            raise ValueError(f"{where}.hash={str(tx)[:80]!r} is not a hash")
        pubdata = raw.get("pubdata")
        if not isinstance(pubdata, dict):
            raise ValueError(f"{where}.pubdata is not an object")
        trade = pubdata.get("trade_pubdata", pubdata.get("trade_pubdata_with_funding"))
        if trade is None:
            out.append((at, None, tx.lower()))
            continue
        if not isinstance(trade, dict):
            raise ValueError(f"{where}.pubdata trade is not an object")
        taker_ask = trade.get("is_taker_ask")
        if taker_ask not in (0, 1) or isinstance(taker_ask, bool):
            raise ValueError(f"{where} is_taker_ask={str(taker_ask)[:20]!r} is neither 0 nor 1")
        price = parse_decimal(trade.get("price"), f"{where}.price")
        size = parse_decimal(trade.get("size"), f"{where}.size")
        if price <= 0 or size <= 0:
            raise ValueError(f"{where} has price={price} size={size}; a trade has both above 0")
        parsed = {
            "market": _index(trade.get("market_index"), f"{where}.market_index"),
            "taker_ask": taker_ask,
            "price": price,
            "size": size,
            "maker": _index(trade.get("maker_account_index"), f"{where}.maker_account_index"),
            "taker": _index(trade.get("taker_account_index"), f"{where}.taker_account_index"),
        }
        out.append((at, parsed, tx.lower()))
    return out


def bought_by(trade: Mapping[str, Any], account: int) -> bool:
    """The adapter's rule: the account is the bidding side, as taker of a bid or maker against an ask."""
    taker_bids = trade["taker_ask"] == 0
    return bool(trade["taker"] == account if taker_bids else trade["maker"] == account)


def trade_key(at: datetime, tx: str, trade: Mapping[str, Any]) -> str:
    def plain(value: Decimal) -> str:
        return format(value.normalize(), "f")

    parts = (tx, at.isoformat(), trade["market"], plain(trade["price"]), plain(trade["size"]))
    return "trade:" + ":".join(str(p) for p in parts) + f":{trade['maker']}>{trade['taker']}"


class LighterAccountTrades:
    """`lighter_account_trades`: one account's buys on one market, from the explorer's account logs."""

    kind: ProgrammeKind = "lighter_account_trades"

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise ValueError(f"unknown parameter {', '.join(unknown)}; this kind takes {', '.join(_PARAMS)}")
        out = {}
        for name, default in (("account_index", 0), ("market_index", 2049)):
            value = params.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number of 0 or more, got {str(value)[:60]!r}")
            out[name] = value
        return out

    async def fetch(self, ctx: SourceContext) -> Fetched:
        p = self.validate(ctx.programme.params)
        base = ctx.urls.get(URL_SETTING, DEFAULT_URLS[URL_SETTING]).rstrip("/")
        newest, offset, top = self._cursor(ctx.cursor)
        buys: dict[str, Buy] = {}
        finished = False
        for _ in range(MAX_PAGES):
            try:
                body = await ctx.get_json(
                    Request(
                        f"{base}/api/accounts/{p['account_index']}/logs",
                        params={"pub_data_type": "Trade", "limit": str(LIMIT), "offset": str(offset)},
                    )
                )
            except HttpStatusError as exc:
                if not _history_ends(exc, offset):
                    raise
                # The explorer refuses to page deeper (DefiLlama's adapter stops at a fixed depth too): what
                # it serves is all that can be counted, and the totals say from when ("counted only since").
                log.warning("lighter explorer refused offset=%d status=%d: history ends there", offset, exc.status)
                finished = True
                break
            logs = parse_logs(body)
            if top is None and logs:
                top = logs[0][0]
            reached = False
            for at, trade, tx in logs:
                if newest is not None and at < newest:
                    reached = True
                    break
                if trade is None or trade["market"] != p["market_index"] or not bought_by(trade, p["account_index"]):
                    continue
                key = trade_key(at, tx, trade)
                buys[key] = Buy(
                    key=key,
                    start=at,
                    end=at,
                    tokens=trade["size"],
                    usd=trade["price"] * trade["size"],
                    basis="measured",
                )
            if reached or len(logs) < LIMIT:
                finished = True
                break
            offset += LIMIT
        if finished:
            counted = top if newest is None or (top is not None and top > newest) else newest
            cursor = {"newest": None if counted is None else counted.isoformat(), "scan": None}
            return Fetched(buys=list(buys.values()), cursor=cursor)
        scan = {"offset": offset, "top": None if top is None else top.isoformat()}
        stored: dict[str, Any] = {"newest": None if newest is None else newest.isoformat(), "scan": scan}
        return Fetched(buys=list(buys.values()), cursor=stored, more=True)

    @staticmethod
    def _cursor(cursor: object) -> tuple[datetime | None, int, datetime | None]:
        """`(newest counted, offset of the scan under way, newest log when that scan began)`."""
        if cursor is None:
            return None, 0, None
        if not isinstance(cursor, dict):
            raise ValueError(f"stored cursor {str(cursor)[:80]} is not a lighter_account_trades cursor")
        raw_newest = cursor.get("newest")
        newest = None if raw_newest is None else _time(raw_newest, "cursor newest")
        scan = cursor.get("scan")
        if scan is None:
            return newest, 0, None
        if not isinstance(scan, dict):
            raise ValueError(f"stored cursor scan={str(scan)[:80]} is not a scan")
        offset = _index(scan.get("offset"), "cursor scan offset")
        top = scan.get("top")
        return newest, offset, None if top is None else _time(top, "cursor scan top")


SOURCE = LighterAccountTrades()


def _history_ends(exc: HttpStatusError, offset: int) -> bool:
    """A client error for a page past the first (a 429 is a pause, not an end; a refused first page is a
    fault): the explorer serves no deeper history."""
    return not isinstance(exc, RateLimited) and 400 <= exc.status < 500 and offset > 0
