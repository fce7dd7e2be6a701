"""Parsers for what users type. Each raises CommandError saying what was expected, before anything changes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from bot.commands.base import CommandError
from perpwatch.events import Topic, Venue
from perpwatch.symbols import normalize_symbol

TOPICS = tuple(t.value for t in Topic)
VENUES = tuple(v.value for v in Venue)
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_LABEL = re.compile(r"^[\w.\-]{1,32}$")
_SUFFIX = {"k": Decimal(10) ** 3, "m": Decimal(10) ** 6, "b": Decimal(10) ** 9}
MAX_USD = Decimal(10) ** 13


def topic(text: str) -> Topic:
    try:
        return Topic(text.strip().lower())
    except ValueError:
        raise CommandError(f"unknown topic {text!r}; expected one of {', '.join(TOPICS)}") from None


def venue(text: str) -> Venue:
    try:
        return Venue(text.strip().lower())
    except ValueError:
        raise CommandError(f"unknown venue {text!r}; expected one of {', '.join(VENUES)}") from None


def symbol(text: str) -> str:
    try:
        return normalize_symbol(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def usd_amount(text: str) -> Decimal:
    """`250000`, `250k`, `$1.5M`, `1,000,000` → Decimal dollars; negative, NaN and absurd values refused."""
    cleaned = text.strip().lower().replace(",", "").replace("_", "").removeprefix("$")
    factor = Decimal(1)
    if cleaned[-1:] in _SUFFIX:
        factor = _SUFFIX[cleaned[-1]]
        cleaned = cleaned[:-1]
    try:
        amount = Decimal(cleaned) * factor
    except InvalidOperation:
        raise CommandError(f"{text!r} is not an amount; expected a USD number like 250000, 250k or 1.5m") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_USD:
        raise CommandError(f"{text!r} is out of range; expected a USD amount from 0 to 10,000,000,000,000")
    # "1.5m" is 1500000.0 after scaling; store the plain integer form, never an exponent like 1E+6.
    return amount.quantize(Decimal(1)) if amount == amount.to_integral_value() else amount.normalize()


def address(text: str) -> str:
    if not _ADDRESS.match(text.strip()):
        raise CommandError(f"{text!r} is not a wallet address; expected 0x followed by 40 hex digits")
    return text.strip().lower()


def label(text: str) -> str:
    cleaned = text.strip()
    if len(cleaned) > 32:
        raise CommandError(f"label is {len(cleaned)} characters; the limit is 32")
    if not _LABEL.match(cleaned) or cleaned.lower().startswith("0x"):
        raise CommandError(
            f"{text!r} is not a label; expected 1-32 letters, digits, '_', '-' or '.', not starting with 0x"
        )
    return cleaned
