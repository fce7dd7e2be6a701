"""Symbol names differ per venue (BTCUSDT, BTC-USDT-SWAP, BTC); users type the asset they mean."""

from __future__ import annotations

import re

_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "USDE", "USD")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._:/-]{0,39}$")


def normalize_symbol(text: str) -> str:
    """Upper-case and check a user-typed symbol; raises ValueError with what was expected."""
    symbol = text.strip().upper()
    if not _SYMBOL.match(symbol):
        raise ValueError(f"{text!r} is not a symbol; expected letters and digits like BTC or ETHUSDT")
    return symbol


def base_asset(symbol: str) -> str:
    """The asset a venue symbol trades: BTCUSDT → BTC, BTC-USDT-SWAP → BTC, kPEPE → KPEPE."""
    upper = symbol.upper()
    head = re.split(r"[-_/:]", upper, maxsplit=1)[0]
    if head != upper:
        return head
    for quote in _QUOTES:
        if upper.endswith(quote) and len(upper) > len(quote):
            return upper[: -len(quote)]
    return upper
