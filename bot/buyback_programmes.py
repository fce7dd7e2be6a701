"""Buyback programmes as data: the bundled defaults (`bot/data/buybacks.toml`) and an operator's own, both
checked the same way before anything is stored.

A programme is a kind plus parameters; the kind's source (`watchers/buyback_sources.py`) checks the
parameters, this module checks the rest (id, token key, symbol, source, supply). A bad bundled entry is
refused with the file, the entry and what is wrong, and the others still load: one typo must not cost every
programme.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from perpwatch.buybacks import KINDS, PROGRAMME_ID, Programme, ProgrammeKind
from watchers.buyback_sources import validate as validate_params

log = logging.getLogger(__name__)

TOKEN_KEY = re.compile(r"^(coingecko:[a-z0-9-]{1,80}|[a-z0-9-]{2,20}:0x[0-9a-f]{40})$")
"""`coingecko:hyperliquid` or `ethereum:0x…`: a token by CoinGecko id or chain and contract, never by ticker
alone (two tokens trade as EDGE)."""

SYMBOL = re.compile(r"^[A-Z0-9]{1,12}$")
URL = re.compile(r"^https://[\x21-\x7e]{4,300}$")

_FIELDS = {"id", "kind", "token", "symbol", "source", "params", "total_supply", "supply_source"}
_OPTIONAL = {"milestone_tokens", "note"}


@dataclass(frozen=True, slots=True)
class Refused:
    """A bundled entry that was not loaded, and why (shown in the log and in `/buybacks list` for operators)."""

    where: str
    reason: str


def _decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'{name} must be a number written as text, like "1000000"')
    try:
        number = Decimal(str(value).replace("_", "").replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{name} {str(value)[:40]!r} is not a number") from None
    if not number.is_finite() or number <= 0 or number.adjusted() > 15:
        raise ValueError(f"{name} must be a positive amount below 10^15")
    return number


def programme_from(entry: Mapping[str, Any], *, origin: str = "bundled") -> Programme:
    """One programme from a mapping (a TOML table, or an operator's `/buybacks add`); ValueError names the
    first thing wrong."""
    unknown = set(entry) - _FIELDS - _OPTIONAL
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    missing = {"id", "kind", "token", "symbol", "source"} - set(entry)
    if missing:
        raise ValueError(f"missing {', '.join(sorted(missing))}")
    pid = str(entry["id"]).strip().lower()
    if not PROGRAMME_ID.match(pid):
        raise ValueError(f"id {pid[:40]!r} must be 2-40 lower-case letters, digits or '-', like hyperliquid-af")
    kind = str(entry["kind"]).strip()
    if kind not in KINDS:
        raise ValueError(f"kind {kind[:40]!r} is not one of {', '.join(KINDS)}")
    token = str(entry["token"]).strip().lower()
    if not TOKEN_KEY.match(token):
        raise ValueError(f"token {token[:60]!r} must be coingecko:<id> or <chain>:0x<contract>, never a ticker alone")
    symbol = str(entry["symbol"]).strip().upper()
    if not SYMBOL.match(symbol):
        raise ValueError(f"symbol {symbol[:20]!r} must be 1-12 letters or digits, like HYPE")
    source = str(entry["source"]).strip()
    if not URL.match(source):
        raise ValueError("source must be the https:// address of the public page that names the wallet or method")
    raw_params = entry.get("params", {})
    if not isinstance(raw_params, Mapping):
        raise ValueError("params must be a table of the kind's parameters")
    params = validate_params(kind, dict(raw_params))
    supply = _decimal(entry["total_supply"], "total_supply") if "total_supply" in entry else None
    supply_source = str(entry["supply_source"]).strip() if "supply_source" in entry else None
    if (supply is None) != (supply_source is None):
        raise ValueError("total_supply and supply_source go together: a supply figure needs its source")
    if supply_source is not None and not URL.match(supply_source):
        raise ValueError("supply_source must be an https:// address")
    step = _decimal(entry["milestone_tokens"], "milestone_tokens") if "milestone_tokens" in entry else None
    note = str(entry["note"]).strip()[:500] if "note" in entry else None
    return Programme(
        id=pid,
        kind=_kind(kind),
        token=token,
        symbol=symbol,
        params=params,
        source=source,
        origin="chat" if origin == "chat" else "bundled",
        total_supply=supply,
        supply_source=supply_source,
        milestone_tokens=step,
        note=note,
    )


def _kind(text: str) -> ProgrammeKind:
    for kind in KINDS:
        if kind == text:
            return kind
    raise ValueError(f"kind {text!r} is not one of {', '.join(KINDS)}")


def parse_bundled(text: str, name: str = "buybacks.toml") -> tuple[list[Programme], list[Refused]]:
    """The programmes of a bundled file, and the entries refused with where and why."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [], [Refused(name, f"not valid TOML: {exc}")]
    entries = data.get("programme", [])
    if not isinstance(entries, list):
        return [], [Refused(name, "[[programme]] must be an array of tables")]
    loaded: list[Programme] = []
    refused: list[Refused] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        where = f"{name} programme #{number}" + (f" ({entry.get('id')})" if isinstance(entry, dict) else "")
        try:
            if not isinstance(entry, dict):
                raise ValueError("each [[programme]] must be a table")
            programme = programme_from(entry)
            if programme.id in seen:
                raise ValueError(f"id {programme.id} is used twice")
        except ValueError as exc:
            refused.append(Refused(where, str(exc)))
            continue
        seen.add(programme.id)
        loaded.append(programme)
    return loaded, refused


def aster_wallets(programmes: list[Programme], wallets: list[str]) -> list[Programme]:
    """The bundled Aster programme once more per wallet of `PERPWATCH_ASTER_BUYBACK_WALLETS`, as
    `aster-<first 8 hex digits>`: each is read and totalled on its own, like the bundled wallet."""
    base = next((p for p in programmes if p.kind == "aster_chain_fills" and p.id == "aster"), None)
    if base is None:
        return []
    return [
        replace(
            base,
            id=f"aster-{wallet[2:10]}",
            params=validate_params(base.kind, {**base.params, "wallet": wallet}),
            note=f"Set by PERPWATCH_ASTER_BUYBACK_WALLETS: {wallet}'s ASTER buys on Aster Spot.",
        )
        for wallet in wallets
        if wallet != base.params.get("wallet")
    ]


def bundled() -> tuple[list[Programme], list[Refused]]:
    text = resources.files("bot").joinpath("data", "buybacks.toml").read_text(encoding="utf-8")
    loaded, refused = parse_bundled(text)
    for r in refused:
        log.error("bundled buyback programme refused where=%s reason=%s", r.where, r.reason)
    return loaded, refused
