"""The Hyperliquid Assistance Fund's buyback, read as its spot balance over time.

Why a balance and not fills: `userFills(ByTime)` reach only the most recent fills (days of the fund's
buying), so fills cannot backfill history; the balance can be read at any time and its difference between two
snapshots is what was bought in between (research/unlocks-buybacks-tge.md §2.1, §6.4).

Wire shapes, each from a named source:

- `{"type":"spotMeta"}` → `tokens[]` of `{name, index:int, tokenId:"0x<32 hex>", …}` (research/exchange-apis.md
  §8.5; sample `payloads/hyperliquid_spotMeta_docs.json`).
- `{"type":"spotClearinghouseState","user"}` → `{"balances":[{coin, token:int, hold, total, entryNtl}]}`, figures
  as decimal strings (exchange-apis.md §1.2; samples `payloads/hyperliquid_spotClearinghouseState_docs.json` and
  `…_assistanceFund_real2026.json`).
- Weights: taken from `watchers.hl_account.WEIGHTS`, so one table holds them and its choice where two docs pages
  disagree on `spotMeta` (the heavier one is budgeted) applies here too (exchange-apis.md §1.4, §8.5).

The token is found by its tokenId, never by its name: names are not unique across Hyperliquid's spot tokens,
while the tokenId is what DefiLlama and the fund's own docs name (research §2.1, §6.5). The balance row is then
matched by `token` index, which is what `spotClearinghouseState` carries.

Left open by the sources: whether a token a user does not hold is listed with a zero balance or left out; an
absent row is refused rather than read as zero. That `entryNtl` is the USD the fund spent is an inference
(research §6.4): it is kept as the source's own cost figure, named as such.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from perpwatch.buybacks import Buy, Fetched, ProgrammeKind, RunningTotal, Snapshot, SourceContext
from perpwatch.events import parse_decimal
from watchers.hl_account import WEIGHTS
from watchers.poller import Request

logger = logging.getLogger(__name__)

URL_SETTING = "hyperliquid_info_url"
DEFAULT_URLS: dict[str, str] = {URL_SETTING: "https://api.hyperliquid.xyz/info"}

INDEX_REFRESH = timedelta(days=1)
"""How long a token index read from `spotMeta` is trusted: an index is not expected to change, and `spotMeta`
weighs as much as many balance reads, so it is asked for at most daily."""

GAP_FACTOR = 2.5
"""A snapshot later than this many expected intervals after the one before marks a gap: the buy it yields is
then shown as spread over the gap, not as one burst."""

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TOKEN_ID = re.compile(r"^0x[0-9a-fA-F]{32}$")
_PARAMS = ("user", "token_id", "expected_interval_s")


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={str(value)[:60]!r} is not an integer")
    return value


def token_index(body: object, token_id: str) -> int:
    """The index of the token with `token_id` in a `spotMeta` answer (shape: exchange-apis.md §8.5, sample
    `hyperliquid_spotMeta_docs.json`). A tokenId listed twice is refused: which index would be ours is unknowable."""
    if not isinstance(body, dict) or not isinstance(body.get("tokens"), list):
        raise ValueError(f"spotMeta is not an object with a tokens list: {str(body)[:120]}")
    found: list[int] = []
    for i, token in enumerate(body["tokens"]):
        if not isinstance(token, dict):
            raise ValueError(f"spotMeta tokens[{i}] is not an object")
        tid = token.get("tokenId")
        if not isinstance(tid, str):
            raise ValueError(f"spotMeta tokens[{i}].tokenId={str(tid)[:60]!r} is not a string")
        if tid.lower() == token_id:
            found.append(_int(token.get("index"), f"spotMeta tokens[{i}].index"))
    if not found:
        raise ValueError(f"spotMeta lists no token with tokenId {token_id}")
    if len(found) > 1:
        raise ValueError(f"spotMeta lists tokenId {token_id} {len(found)} times")
    return found[0]


def balance_of(body: object, index: int) -> tuple[Decimal, Decimal]:
    """`(total, entryNtl)` of the balance row whose `token` is `index` in a `spotClearinghouseState` answer
    (shape: exchange-apis.md §1.2, samples `hyperliquid_spotClearinghouseState_*.json`)."""
    if not isinstance(body, dict) or not isinstance(body.get("balances"), list):
        raise ValueError(f"spotClearinghouseState is not an object with a balances list: {str(body)[:120]}")
    rows = []
    for i, row in enumerate(body["balances"]):
        if not isinstance(row, dict):
            raise ValueError(f"spotClearinghouseState balances[{i}] is not an object")
        if _int(row.get("token"), f"balances[{i}].token") == index:
            rows.append(row)
    if not rows:
        raise ValueError(f"spotClearinghouseState lists no balance of token index {index}")
    if len(rows) > 1:
        raise ValueError(f"spotClearinghouseState lists token index {index} {len(rows)} times")
    total = parse_decimal(rows[0].get("total"), "total")
    cost = parse_decimal(rows[0].get("entryNtl"), "entryNtl")
    if total < 0 or cost < 0:
        raise ValueError(f"a negative balance (total={total}, entryNtl={cost}) is not a holding")
    return total, cost


class HyperliquidSpotBalance:
    """`hyperliquid_spot_balance`: the balance of one spot token of one address, snapshot by snapshot."""

    kind: ProgrammeKind = "hyperliquid_spot_balance"

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise ValueError(f"unknown parameter {', '.join(unknown)}; this kind takes {', '.join(_PARAMS)}")
        user = params.get("user")
        if not isinstance(user, str) or not _ADDRESS.match(user):
            raise ValueError(f"user must be a 0x address, got {str(user)[:60]!r}")
        token_id = params.get("token_id")
        if not isinstance(token_id, str) or not _TOKEN_ID.match(token_id):
            raise ValueError(f"token_id must be a hex tokenId (0x and 32 hex digits), got {str(token_id)[:60]!r}")
        interval = params.get("expected_interval_s", 300)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
            raise ValueError(f"expected_interval_s must be a whole number of seconds above 0, got {interval!r}")
        return {"user": user.lower(), "token_id": token_id.lower(), "expected_interval_s": interval}

    async def fetch(self, ctx: SourceContext) -> Fetched:
        params = self.validate(ctx.programme.params)
        url = ctx.urls.get(URL_SETTING, DEFAULT_URLS[URL_SETTING])
        index, checked_at = self._cached_index(ctx.cursor, params["token_id"], ctx.now)
        if index is None:
            body = await ctx.get_json(Request(url, "POST", json_body={"type": "spotMeta"}, weight=WEIGHTS["spotMeta"]))
            index, checked_at = token_index(body, params["token_id"]), ctx.now
        body = await ctx.get_json(
            Request(
                url,
                "POST",
                json_body={"type": "spotClearinghouseState", "user": params["user"]},
                weight=WEIGHTS["spotClearinghouseState"],
            )
        )
        total, cost = balance_of(body, index)
        cursor = {"token_id": params["token_id"], "token_index": index, "index_checked_at": checked_at.isoformat()}
        running = RunningTotal(
            tokens=total,
            usd=cost,
            source=f"Hyperliquid spotClearinghouseState of {params['user']} (total, entryNtl)",
            as_of=ctx.now,
        )
        last = ctx.last_snapshot
        if last is None:
            return Fetched(buys=(), cursor=cursor, snapshot=Snapshot(ctx.now, total, cost), running_total=running)
        elapsed = (ctx.now - last.taken_at).total_seconds()
        gap_s = elapsed if elapsed > GAP_FACTOR * params["expected_interval_s"] else None
        snapshot = Snapshot(ctx.now, total, cost, gap_s=gap_s)
        bought = total - last.balance
        buys: list[Buy] = []
        if bought > 0:
            buys.append(
                Buy(
                    key=f"snapshot:{ctx.now.isoformat(timespec='milliseconds')}",
                    start=last.taken_at,
                    end=ctx.now,
                    tokens=bought,
                    usd=None if last.cost_usd is None else cost - last.cost_usd,
                    basis="measured",
                    note=None if gap_s is None else f"spans a {_duration(gap_s)} gap without snapshots",
                )
            )
        elif bought < 0:
            # The fund is documented as never selling (its HYPE is burned, research §2.1): a fall is worth a
            # line in the log, and no buy; the next rise is counted from the lower balance.
            logger.warning(
                "buyback balance fell programme=%s from=%s to=%s: no buy counted", ctx.programme.id, last.balance, total
            )
        return Fetched(buys=buys, cursor=cursor, snapshot=snapshot, running_total=running)

    @staticmethod
    def _cached_index(cursor: object, token_id: str, now: datetime) -> tuple[int | None, datetime]:
        """The index kept in the cursor while it is younger than a day and for the same token; else None."""
        if not isinstance(cursor, dict) or cursor.get("token_id") != token_id:
            return None, now
        index, checked = cursor.get("token_index"), cursor.get("index_checked_at")
        if isinstance(index, bool) or not isinstance(index, int) or not isinstance(checked, str):
            return None, now
        try:
            checked_at = datetime.fromisoformat(checked)
        except ValueError:
            return None, now
        if checked_at.tzinfo is None or not timedelta(0) <= now - checked_at < INDEX_REFRESH:
            return None, now
        return index, checked_at


SOURCE = HyperliquidSpotBalance()
