"""Small pure helpers shared by the venue parsers (`watchers.bybit`, `okx`, `hyperliquid`, `lighter`,
`pacifica`): compact JSON for frames, chunking, and reading figures, times and symbols with the refusal
reasons of `watchers.validate`, the way `watchers.forceorder` does."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from perpwatch.events import MAX_USD, MIN_USD, SYMBOL_PATTERN, Event, parse_decimal, utc_from_ms
from watchers.validate import BAD_FIGURE, BAD_SYMBOL, BAD_TIME, IMPLAUSIBLE_USD, PLAUSIBLE, Refused

SIDE_MISMATCH = "side_mismatch"
"""A frame whose side fields contradict each other: refused, never guessed."""

UNKNOWN_KIND = "unknown_kind"
"""A liquidation-ish item of a kind the research does not describe (a trade type, a cause): refused."""


def compact(value: object) -> str:
    """A frame as the venues' docs write it: JSON without spaces."""
    return json.dumps(value, separators=(",", ":"))


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    """`items` in order, in lists of at most `size`."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def mapping(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} is {type(value).__name__}, expected an object")
    return value


def array(value: object, name: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{name} is {type(value).__name__}, expected an array")
    return value


def text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}={value!r} is not a non-empty string")
    return value


def integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not an integer")
    return value


def figure(value: object, name: str) -> Decimal:
    """A positive wire figure from its decimal string, or `Refused(BAD_FIGURE)`."""
    try:
        number = parse_decimal(value, name)
    except ValueError as exc:
        raise Refused(BAD_FIGURE, str(exc)) from None
    if number <= 0:
        raise Refused(BAD_FIGURE, f"{name}={value!r} is not positive")
    return number


def ms_time(value: object, name: str, *, digits_ok: bool = False) -> datetime:
    """A Unix-millisecond timestamp (an int; a string of digits where the venue sends one, as OKX does)."""
    if digits_ok and isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} is not a millisecond timestamp")
    try:
        return utc_from_ms(value)
    except (OverflowError, OSError, ValueError):
        raise Refused(BAD_TIME, f"{name}={value!r} is no date") from None


def symbol(value: object, name: str) -> str:
    raw = text(value, name)
    if not SYMBOL_PATTERN.match(raw):
        raise Refused(BAD_SYMBOL, f"{name}={raw[:60]!r} is not a plain venue symbol")
    return raw


def notional(size: Decimal, price: Decimal, what: str) -> Decimal:
    value = size * price
    if not MIN_USD <= value <= MAX_USD:
        raise Refused(IMPLAUSIBLE_USD, f"{what} has a notional of {value:f}")
    return value


def plausible(events: list[Event], now_ms: int | None) -> list[Event]:
    """With `now_ms`, refuse the frame if an event's time or figure could not be real then (the stream's
    window, `watchers.validate.PLAUSIBLE`); without it the parser stays clock-free, like `forceorder`."""
    if now_ms is None:
        return events
    now = utc_from_ms(now_ms)
    for event in events:
        reason = PLAUSIBLE.check(event, now)
        if reason is not None:
            raise Refused(reason, f"{event.key}: occurred_at {event.occurred_at.isoformat()} refused at {now}")
    return events
