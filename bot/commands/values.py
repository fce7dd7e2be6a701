"""Parsers for what users type. Each raises CommandError saying what was expected, before anything changes,
and nothing else whatever the text: digits are ASCII (Python's `isdigit()` and `Decimal` take `²` and `١`),
amounts are plain (an exponent like `1e1000000` makes Decimal arithmetic raise), and ids fit SQLite's
64-bit integers. User text quoted back is escaped and cut (`shown`)."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from bot.commands.base import CommandError
from perpwatch.events import Topic, Venue, is_solana_address
from perpwatch.symbols import normalize_symbol
from storage.engine import BIGINT_MAX

TOPICS = tuple(t.value for t in Topic)
VENUES = tuple(v.value for v in Venue)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_LABEL = re.compile(r"[\w.\-]{1,32}")
_SUFFIX = {"k": Decimal(10) ** 3, "m": Decimal(10) ** 6, "b": Decimal(10) ** 9}
MAX_USD = Decimal(10) ** 13
_AMOUNT = re.compile(r"[0-9]{1,14}(?:\.[0-9]{0,8})?|\.[0-9]{1,8}")
"""A plain amount: with at most 22 digits, scaling by a suffix stays exact in Decimal's default precision."""
_SUBSCRIPTION_ID = re.compile(r"#?([0-9]{1,19})")
MAX_ID = BIGINT_MAX
"""A bigger id cannot even be looked up."""
MAX_SHOWN = 40


def shown(text: str) -> str:
    """User text quoted in a refusal: repr escapes control characters, NUL and direction overrides, and the
    cut keeps a long paste out of the reply. The cut is of what is shown, not of the text: an escaped
    character shows as up to ten (a control character as four, an unassigned one as ten), so forty of them
    made a refusal of over 300 characters (a fuzzed `/subscribe venue=…`)."""
    keep = min(len(text), MAX_SHOWN)
    while len(repr(text[:keep])) > MAX_SHOWN + 2:  # the quotes are not the user's
        keep -= 1
    return repr(text[:keep]) + ("…" if keep < len(text) else "")


def topic(text: str) -> Topic:
    try:
        return Topic(text.strip().lower())
    except ValueError:
        raise CommandError(f"unknown topic {shown(text)}; expected one of {', '.join(TOPICS)}") from None


def venue(text: str) -> Venue:
    try:
        return Venue(text.strip().lower())
    except ValueError:
        raise CommandError(f"unknown venue {shown(text)}; expected one of {', '.join(VENUES)}") from None


def symbol(text: str) -> str:
    try:
        return normalize_symbol(text)
    except ValueError:
        raise CommandError(f"{shown(text)} is not a symbol; expected letters and digits like BTC or ETHUSDT") from None


def usd_amount(text: str) -> Decimal:
    """`250000`, `250k`, `$1.5M`, `1,000,000` → Decimal dollars; anything else, and more than 10 trillion, refused."""
    cleaned = text.strip().lower().replace(",", "").replace("_", "").removeprefix("$")
    factor = Decimal(1)
    if cleaned[-1:] in _SUFFIX:
        factor = _SUFFIX[cleaned[-1]]
        cleaned = cleaned[:-1]
    if not _AMOUNT.fullmatch(cleaned):
        raise CommandError(
            f"{shown(text)} is not an amount; expected a plain USD number like 250000, 250k or 1.5m", show_usage=True
        )
    amount = Decimal(cleaned) * factor
    if amount > MAX_USD:
        raise CommandError(
            f"{shown(text)} is out of range; expected a USD amount from 0 to 10,000,000,000,000", show_usage=True
        )
    # "1.5m" is 1500000.0 after scaling; store the plain integer form, never an exponent like 1E+6.
    return amount.quantize(Decimal(1)) if amount == amount.to_integral_value() else amount.normalize()


def subscription_id(text: str) -> int:
    """`#12` or `12`, as /list shows it."""
    match = _SUBSCRIPTION_ID.fullmatch(text.strip())
    if match is None or int(match.group(1)) > MAX_ID:
        raise CommandError(
            f"{shown(text)} is not a subscription id; expected #id as /list shows it, like #12", show_usage=True
        )
    return int(match.group(1))


def looks_like_address(text: str) -> bool:
    """Whether `text` is meant as an address rather than a label: it starts with 0x, or is a base58 Solana
    address (which no label may be, see `label`)."""
    cleaned = text.strip()
    return cleaned.lower().startswith("0x") or is_solana_address(cleaned)


def address(text: str) -> str:
    """An EVM address (Hyperliquid, Lighter), lower-cased, or a base58 Solana address (Pacifica), kept as
    typed: base58 is case-sensitive."""
    cleaned = text.strip()
    if _ADDRESS.fullmatch(cleaned):
        return cleaned.lower()
    if is_solana_address(cleaned):
        return cleaned
    raise CommandError(f"{shown(text)} is not a wallet address; expected 0x and 40 hex digits, or a Solana address")


def label(text: str) -> str:
    cleaned = text.strip()
    if len(cleaned) > 32:
        raise CommandError(f"label is {len(cleaned)} characters; the limit is 32")
    if not _LABEL.fullmatch(cleaned) or looks_like_address(cleaned):
        raise CommandError(
            f"{shown(text)} is not a label; expected 1-32 letters, digits, '_', '-' or '.', not starting with 0x"
            " and not a Solana address"
        )
    return cleaned


_WINDOW = re.compile(r"([0-9]{1,5})(m|h|d)")
_WINDOW_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


def looks_like_window(text: str) -> bool:
    return _WINDOW.fullmatch(text.strip().lower()) is not None


def window(text: str, *, longest: timedelta) -> timedelta:
    """`30m`, `4h`, `7d`: a look-back window, at most `longest` (what the log still holds)."""
    match = _WINDOW.fullmatch(text.strip().lower())
    if match is None:
        raise CommandError(f"{shown(text)} is not a window; expected minutes, hours or days like 30m, 4h or 7d")
    span = int(match.group(1)) * _WINDOW_UNIT[match.group(2)]
    if span <= timedelta(0):
        raise CommandError("the window must be longer than zero")
    if span > longest:
        raise CommandError(f"the window can be at most {longest.days}d: older events are no longer kept")
    return span
