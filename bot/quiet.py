"""Quiet hours: a chat's nightly window, in its own time zone, when alerts wait for a morning digest."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from storage.models import Chat

QUIET_HOLD = "held: quiet hours"
"""The `last_error` a delivery carries while quiet hours hold it; the dispatcher digests such rows."""

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_hhmm(text: str) -> time:
    match = _HHMM.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a time; expected HH:MM on a 24-hour clock, like 23:00")
    return time(int(match.group(1)), int(match.group(2)))


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone; expected an IANA name like UTC or Europe/Berlin") from None


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, window: str, zone: str = "UTC") -> QuietHours:
        start_text, sep, end_text = window.partition("-")
        if not sep:
            raise ValueError(f"{window!r} is not a window; expected HH:MM-HH:MM, like 23:00-07:00")
        start, end = parse_hhmm(start_text), parse_hhmm(end_text)
        if start == end:
            raise ValueError("quiet hours must not start and end at the same minute")
        return cls(start=start, end=end, zone=parse_zone(zone))

    @classmethod
    def of(cls, chat: Chat) -> QuietHours | None:
        if not (chat.quiet_start and chat.quiet_end):
            return None
        return cls.parse(f"{chat.quiet_start}-{chat.quiet_end}", chat.quiet_tz or "UTC")

    def active(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone).time()
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # the window wraps past midnight

    def ends_after(self, moment: datetime) -> datetime:
        """The first end of the window after `moment`, as an aware instant (DST-safe via the zone)."""
        local = moment.astimezone(self.zone)
        candidate = datetime.combine(local.date(), self.end, tzinfo=self.zone)
        if candidate <= local:
            candidate = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=self.zone)
        return candidate.astimezone(moment.tzinfo)

    def describe(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.zone.key}"
