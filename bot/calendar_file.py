"""The calendar data file (`bot/data/calendar.toml`): read, validated line by line, recurring lines expanded.

Why entry by entry: one bad line (a typo, a missing source) must not take the whole calendar down, and the
operator must be told which file, which line and what is wrong. So the file is cut at each `[[event]]`
header and every piece is parsed on its own: a TOML syntax error costs only its entry, and a field's error
points at that field's line.

Why strings for amounts: a TOML float has already lost digits (0.1 is not 0.1), and amounts are exact
Decimals everywhere in perpwatch; an amount written as a float is refused with the line.

A recurring line (`repeat = "monthly"` or `"weekly"`) is one series in the file and one calendar entry per
occurrence (`<id>@<date>`) within the horizon, so each occurrence is reminded, moved or cancelled on its own
and a chat edit of one occurrence leaves the others alone.
"""

from __future__ import annotations

import calendar as _months
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from perpwatch.calendar import CalendarEntry, Precision, parse_when

HORIZON = timedelta(days=100)
"""How far ahead a recurring line is expanded into entries: past the longest lead, and a few months of
/upcoming; the service expands again as time goes on."""

_HEADER = re.compile(r"^\s*\[\[event\]\]\s*(#.*)?$")
_FIELDS = {
    "id",
    "project",
    "token",
    "coingecko_id",
    "contracts",
    "type",
    "title",
    "start",
    "precision",
    "repeat",
    "until",
    "amount",
    "pct_supply",
    "total_supply",
    "status",
    "figure",
    "source",
    "retrieved",
    "note",
}
_REQUIRED = ("id", "project", "type", "start", "status", "figure", "source", "retrieved")


@dataclass(frozen=True)
class Rejected:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Series:
    """One line of the file: a single entry, or a recurring one (`repeat`) to expand into occurrences."""

    first: CalendarEntry
    repeat: str | None = None
    until: date | None = None
    line: int = 0

    def occurrences(self, now: datetime, horizon: timedelta = HORIZON) -> list[CalendarEntry]:
        if self.repeat is None:
            return [self.first]
        out: list[CalendarEntry] = []
        for start in _steps(self.first.starts_at, self.repeat):
            if start > now + horizon or (self.until is not None and start.date() > self.until):
                break
            if start >= now - timedelta(days=1):  # a day back: today's occurrence is still listed
                out.append(
                    self.first.model_copy(update={"id": f"{self.first.id}@{start:%Y-%m-%d}", "starts_at": start})
                )
        return out


@dataclass
class LoadReport:
    series: list[Series] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def entries(self, now: datetime, horizon: timedelta = HORIZON) -> list[CalendarEntry]:
        return [entry for s in self.series for entry in s.occurrences(now, horizon)]


def bundled_path() -> Path:
    return Path(str(resources.files("bot").joinpath("data", "calendar.toml")))


def load_file(path: Path) -> LoadReport:
    """Every valid line of the file; each invalid one rejected with its line and reason."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return LoadReport(rejected=[Rejected(name, 0, f"cannot read the file: {exc}")])
    return load_text(text, name)


def load_text(text: str, name: str = "calendar.toml") -> LoadReport:
    report = LoadReport()
    seen: dict[str, int] = {}
    for start_line, chunk in _chunks(text):
        try:
            parsed = tomllib.loads(chunk)
        except tomllib.TOMLDecodeError as exc:
            found = re.search(r"line ([0-9]+)", str(exc))
            offset = int(found.group(1)) - 1 if found else 0
            report.rejected.append(Rejected(name, start_line + offset, f"not valid TOML: {str(exc).split(' (')[0]}"))
            continue
        tables = parsed.get("event")
        if start_line == 1 and not tables:
            if set(parsed) - {"event"}:
                report.rejected.append(Rejected(name, 1, "only [[event]] tables may be in the file"))
            continue
        if not isinstance(tables, list) or len(tables) != 1 or set(parsed) != {"event"}:
            report.rejected.append(Rejected(name, start_line, "expected one [[event]] table"))
            continue
        raw: dict[str, Any] = tables[0]
        try:
            series = _series(raw, start_line)
        except _LineError as exc:
            line = start_line + _line_of(chunk, exc.field) if exc.field else start_line
            report.rejected.append(Rejected(name, line, exc.reason))
            continue
        if series.first.id in seen:
            report.rejected.append(
                Rejected(name, start_line, f"id {series.first.id!r} is already used on line {seen[series.first.id]}")
            )
            continue
        seen[series.first.id] = start_line
        report.series.append(series)
    return report


class _LineError(Exception):
    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def _chunks(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of the preamble and of each `[[event]]` table, header included."""
    lines = text.splitlines(keepends=True)
    start = 0
    for index, line in enumerate(lines):
        if _HEADER.match(line) and index > start:
            yield start + 1, "".join(lines[start:index])
            start = index
    yield start + 1, "".join(lines[start:])


def _line_of(chunk: str, key: str) -> int:
    """The offset of `key = …` inside the chunk (0: its header)."""
    for index, line in enumerate(chunk.splitlines()):
        if re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return index
    return 0


def _exact(raw: dict[str, Any], key: str) -> Decimal | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, float):
        raise _LineError(f"{key} must be a string or an integer (a TOML float has lost digits): {value!r}", key)
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,16}(\.[0-9]{1,18})?", value.replace("_", "")):
        raise _LineError(f'{key} {str(value)[:40]!r} is not a plain decimal like "9920000" or "0.992"', key)
    try:
        return Decimal(value.replace("_", ""))
    except InvalidOperation:
        raise _LineError(f"{key} {value[:40]!r} is not a number", key) from None


def _series(raw: dict[str, Any], line: int) -> Series:
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise _LineError(f"unknown field {unknown[0]!r}; fields are {', '.join(sorted(_FIELDS))}", unknown[0])
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise _LineError(f"missing {', '.join(missing)} (every line carries its source and when it was read)")
    start = raw["start"]
    if not isinstance(start, str):
        raise _LineError('start must be a quoted string like "2026-12-06" (UTC)', "start")
    precision = raw.get("precision")
    if precision is not None and not isinstance(precision, str):
        raise _LineError("precision must be a string", "precision")
    try:
        starts_at, exactness = parse_when(start, precision)
    except ValueError as exc:
        raise _LineError(str(exc), "precision" if precision and "precision" in str(exc) else "start") from None
    retrieved = raw["retrieved"]
    if not isinstance(retrieved, date) or isinstance(retrieved, datetime):
        raise _LineError("retrieved must be a TOML date like 2026-11-24", "retrieved")
    repeat = raw.get("repeat")
    if repeat not in (None, "monthly", "weekly"):
        raise _LineError(f"repeat {str(repeat)[:20]!r} is not monthly or weekly", "repeat")
    if repeat is not None and exactness in (Precision.MONTH, Precision.QUARTER):
        raise _LineError("a repeating line needs a day or an exact time", "repeat")
    until = raw.get("until")
    if until is not None and (not isinstance(until, date) or isinstance(until, datetime)):
        raise _LineError("until must be a TOML date like 2027-11-30", "until")
    contracts = raw.get("contracts", [])
    if not isinstance(contracts, list) or not all(isinstance(c, str) for c in contracts):
        raise _LineError('contracts must be a list of "chain:address" strings', "contracts")
    values: dict[str, Any] = {
        "id": raw["id"],
        "project": raw["project"],
        "token": raw.get("token"),
        "coingecko_id": raw.get("coingecko_id"),
        "contracts": tuple(contracts),
        "event_type": raw["type"],
        "starts_at": starts_at,
        "precision": exactness,
        "amount_tokens": _exact(raw, "amount"),
        "pct_supply": _exact(raw, "pct_supply"),
        "total_supply": _exact(raw, "total_supply"),
        "status": raw["status"],
        "figure": raw["figure"],
        "source_url": raw["source"],
        "retrieved_at": retrieved,
        "title": raw.get("title"),
        "note": raw.get("note"),
    }
    try:
        entry = CalendarEntry.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]) if first["loc"] else None
        key = {"event_type": "type", "source_url": "source", "retrieved_at": "retrieved", "amount_tokens": "amount"}
        field_name = key.get(where or "", where)
        message = str(first["msg"]).removeprefix("Value error, ")
        raise _LineError(f"{field_name or 'entry'}: {message}", field_name) from None
    return Series(first=entry, repeat=repeat, until=until, line=line)


def _steps(first: datetime, repeat: str) -> Iterator[datetime]:
    """Occurrence starts: weekly, or monthly on the same day of the month (the last day where a month is
    shorter: a line on the 29th falls on 28 February)."""
    if repeat == "weekly":
        moment = first
        while True:
            yield moment
            moment += timedelta(days=7)
    day = first.day
    year, month = first.year, first.month
    while True:
        last = _months.monthrange(year, month)[1]
        yield first.replace(year=year, month=month, day=min(day, last), tzinfo=UTC)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
