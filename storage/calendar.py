"""The calendar's rows: entries (the entry as JSON beside the columns queries need) and the reminder ladder.

Why reminders are rows here and not events stored ahead in the log: a subscription hears only events
accepted after it was made (`since_event`), so a reminder stored months ahead would never reach a chat that
subscribed last week; and a reminder that fell due while the bot was down needs a note saying it is late,
which only the moment of accepting it can know. So each (entry, revision, lead) waits here, and becomes one
event in the log when it falls due. Its state moves once, from `scheduled` to exactly one of `accepted`,
`dropped` or `withdrawn`, in a statement that checks it is still scheduled: a reminder is never both sent
late and dropped, and a restart finds every one that was still to come.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from perpwatch.calendar import CalendarEntry
from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.engine import Engine, Row, as_bool, as_time

THREAD_PREFIX = "cal:"


def reminder_thread(entry_id: str, revision: int, lead: str) -> str:
    """One thread per (entry, revision, lead): a later timing never edits the message of an earlier one
    (it is a new reminder, told apart by its revision), and withdrawing one timing leaves the others."""
    return f"{THREAD_PREFIX}{entry_id}:r{revision}:{lead}"


@dataclass(frozen=True)
class StoredEntry:
    entry: CalendarEntry
    origin: str
    revision: int
    locked: bool
    fingerprint: str
    edited_by: str | None


@dataclass(frozen=True)
class DueReminder:
    entry_id: str
    revision: int
    lead: str
    due_at: datetime


def _stored(row: Row) -> StoredEntry:
    return StoredEntry(
        entry=CalendarEntry.model_validate_json(row["body"]),
        origin=str(row["origin"]),
        revision=int(row["revision"]),
        locked=as_bool(row["locked"]),
        fingerprint=str(row["fingerprint"]),
        edited_by=row["edited_by"],
    )


class CalendarRepo:
    def __init__(self, db: Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def get(self, entry_id: str) -> StoredEntry | None:
        row = await self.db.fetchone("SELECT * FROM calendar_entries WHERE entry_id = ?", (entry_id,))
        return None if row is None else _stored(row)

    async def put(
        self,
        entry: CalendarEntry,
        *,
        origin: str,
        revision: int,
        locked: bool,
        edited_by: str | None = None,
        schedule: Sequence[tuple[str, datetime]] = (),
        withdraw_before: int | None = None,
    ) -> list[tuple[int, str]]:
        """Insert or replace the entry; in the same transaction withdraw the reminders of revisions below
        `withdraw_before` still scheduled, and schedule this revision's `(lead, due_at)`. Returns the
        (revision, lead) of older reminders already accepted into the log, whose alerts the caller
        withdraws there."""
        now = self.clock.now()
        accepted: list[tuple[int, str]] = []
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO calendar_entries (entry_id, origin, starts_at, status, revision, fingerprint, locked, "
                "edited_by, body, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (entry_id) DO UPDATE SET origin=excluded.origin, starts_at=excluded.starts_at, "
                "status=excluded.status, revision=excluded.revision, fingerprint=excluded.fingerprint, "
                "locked=excluded.locked, edited_by=excluded.edited_by, body=excluded.body, "
                "updated_at=excluded.updated_at",
                (
                    entry.id,
                    origin,
                    entry.starts_at,
                    entry.status.value,
                    revision,
                    entry.fingerprint(),
                    locked,
                    edited_by,
                    entry.model_dump_json(),
                    now,
                ),
            )
            if withdraw_before is not None:
                await tx.execute(
                    "UPDATE calendar_reminders SET state = 'withdrawn', decided_at = ? "
                    "WHERE entry_id = ? AND revision < ? AND state = 'scheduled'",
                    (now, entry.id, withdraw_before),
                )
                rows = await tx.fetch(
                    "SELECT revision, lead FROM calendar_reminders WHERE entry_id = ? AND revision < ? "
                    "AND state = 'accepted'",
                    (entry.id, withdraw_before),
                )
                accepted = [(int(r["revision"]), str(r["lead"])) for r in rows]
            if schedule:
                await tx.executemany(
                    "INSERT INTO calendar_reminders (entry_id, revision, lead, due_at) VALUES (?,?,?,?) "
                    "ON CONFLICT (entry_id, revision, lead) DO NOTHING",
                    [(entry.id, revision, lead, due) for lead, due in schedule],
                )
        return accepted

    async def entries(
        self, *, starting_after: datetime, starting_before: datetime, limit: int = 500
    ) -> list[StoredEntry]:
        """Entries whose start lies in the range, soonest first (cancelled and done ones included: the
        caller decides what to show)."""
        rows = await self.db.fetch(
            "SELECT * FROM calendar_entries WHERE starts_at >= ? AND starts_at < ? "
            "ORDER BY starts_at, entry_id LIMIT ?",
            (starting_after, starting_before, limit),
        )
        return [_stored(r) for r in rows]

    async def count(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM calendar_entries")
        return int(row[0]) if row is not None else 0

    async def chat_ids(self) -> list[str]:
        rows = await self.db.fetch("SELECT entry_id FROM calendar_entries WHERE origin = 'chat' ORDER BY entry_id")
        return [str(r[0]) for r in rows]

    async def due(self, now: datetime, *, limit: int = 200) -> list[DueReminder]:
        rows = await self.db.fetch(
            "SELECT entry_id, revision, lead, due_at FROM calendar_reminders WHERE state = 'scheduled' "
            "AND due_at <= ? ORDER BY due_at, entry_id, lead LIMIT ?",
            (now, limit),
        )
        return [DueReminder(str(r[0]), int(r[1]), str(r[2]), as_time(r[3])) for r in rows]

    async def next_due(self) -> datetime | None:
        row = await self.db.fetchone("SELECT MIN(due_at) FROM calendar_reminders WHERE state = 'scheduled'")
        return None if row is None or row[0] is None else as_time(row[0])

    async def decide(self, reminder: DueReminder, state: str) -> bool:
        """Move a scheduled reminder to `accepted`, `dropped` or `withdrawn`; False if it was no longer
        scheduled (decided already: nothing happens twice)."""
        if state not in ("accepted", "dropped", "withdrawn"):
            raise ValueError(f"unknown reminder state {state!r}")
        changed = await self.db.execute(
            "UPDATE calendar_reminders SET state = ?, decided_at = ? WHERE entry_id = ? AND revision = ? "
            "AND lead = ? AND state = 'scheduled'",
            (state, self.clock.now(), reminder.entry_id, reminder.revision, reminder.lead),
        )
        return changed > 0

    async def reminders(self, entry_id: str) -> list[tuple[int, str, datetime, str]]:
        """(revision, lead, due_at, state) of an entry's reminders, for tests and the operator's view."""
        rows = await self.db.fetch(
            "SELECT revision, lead, due_at, state FROM calendar_reminders WHERE entry_id = ? ORDER BY revision, due_at",
            (entry_id,),
        )
        return [(int(r[0]), str(r[1]), as_time(r[2]), str(r[3])) for r in rows]

    async def reminded_chats(self, entry_id: str) -> list[int]:
        """Chats that were sent a reminder of this entry (of any revision): the ones a move or a cancel is
        told to. The threads are named from the reminders accepted, never matched by pattern: an id may
        hold `_` (a LIKE wildcard) or `:` (one id's threads would look like another's)."""
        accepted = await self.db.fetch(
            "SELECT revision, lead FROM calendar_reminders WHERE entry_id = ? AND state = 'accepted'", (entry_id,)
        )
        threads = [reminder_thread(entry_id, int(r[0]), str(r[1])) for r in accepted]
        if not threads:
            return []
        marks = ",".join("?" * len(threads))
        rows = await self.db.fetch(
            "SELECT DISTINCT d.chat_id FROM deliveries d JOIN events e ON e.id = d.event_id "  # noqa: S608
            f"WHERE e.thread IN ({marks}) AND d.status = 'sent' ORDER BY d.chat_id",
            threads,
        )
        return [int(r[0]) for r in rows]
