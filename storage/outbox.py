"""The event log and the chats' deliveries: the durable outbox between accepting an event and a chat
receiving it.

Accepting an event writes one row, whatever the number of chats that will hear of it. Each chat reads the
log through its own cursor (`chats.log_cursor`): when its worker asks for what is due, the events after
the cursor that match the chat's subscriptions become its delivery rows, at most as many as the worker can
use now, in bounded chunks, with the cursor moved in the same transaction. So a chat that may be sent one
message every three seconds has rows written for what it can be sent, and an event's cost no longer grows
with the chats (at 100,000 chats the old write-every-row-at-accept held the loop for seconds per commit).

What the outbox promised still holds: an accepted event is on disk before `accept` returns (its alerts are
the log plus the cursors, which a crash cannot lose); a delivery row is unique per (event, chat) and a
cursor only moves forward inside the transaction that wrote the rows, so nothing is written twice; ids
grow in commit order (`Tx.serialize`), so a cursor never steps over an event still committing and a chat's
rows keep the log's order.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import BODY_SCHEMA, DistanceBody, Event, PositionSide
from perpwatch.symbols import base_asset
from storage.chats import chat_from_row
from storage.engine import Engine, Row, as_bool, as_time
from storage.models import AcceptResult, Backlog, Chat, PendingDelivery, to_cents

LOG_SPAN = 200
"""Events of the log one chunk of a chat's read visits at most. A visit costs the same whether the event
matches or not (the chat's subscriptions are checked against each), so a chunk's time is set by this span,
and a chunk is one step of the loop: a chat far behind catches up in many short steps, never in one long
one. A chunk also pays a fixed cost (its transaction and the chat's cursor), so a span much shorter than
this reads the same log in more time overall.
"""

LOG_ROWS = 100
"""Rows one chunk writes at most: a row costs about 20 µs, so a chunk whose events nearly all match (a
backlog read for one summary) stays about 2 ms, within a slice of the dispatcher's."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Chunk:
    written: int
    cursor: int
    done: bool
    """Read to the head, or the chat has what the reader wants waiting (or is not active)."""


async def _next_pass() -> None:
    await asyncio.sleep(0)


_EVENT_COLUMNS = (
    "key, topic, source, venue, symbol, base, usd, usd_cents, occurred_at, accepted_at, body, subject, thread, "
    "revision, body_version, due_at, expires_at, side, level, audience"
)
_EVENT_MARKS = "(" + ",".join("?" * 20) + ")"

# The chat's next events after its cursor that one of its subscriptions hears, as its delivery rows. A subscription
# matches on topic, venue and symbol (the venue's symbol or its base asset, so `symbol=BTC` matches BTCUSDT and BTC-
# USDT-SWAP; '*' is "any"), on a minimum USD that is the subscription's own or else the chat's threshold for the
# topic, on having been made before the event, and, when scoped to the watch list, on the event's subject being on
# the chat's list. A whale alert about a wallet (a `whale` event with a subject) goes only to chats that watch that
# wallet, whatever their scope: one chat's watch list is not every chat's feed; `whale` with scope all also takes
# the market-wide whale trades (no subject). A row is due when its event says (default: now) and may be tried no
# earlier than a hold on the chat ends (a 429's retry_after, a retry backoff, quiet hours); an event accepted before
# quiet hours end goes out in their digest. An event without a USD value is not held back by a minimum: it has
# nothing to compare. A withdrawn event, or one already a row, is skipped, and so is a liquidation a cascade carries
# (`fold_thread`) for a chat that will hear that cascade: its cascade subscription covers the market and its minimum
# is met by the cascade's total with this one in it. A distance warning is one step crossed (`level`): a chat hears
# the steps on its list (`chats.distance_warnings`, /distance); a reminder is one lead time (`level` '24h'), heard
# by chats with it on their list (`chats.reminder_leads`). An event with an `audience` is for that chat alone.
_READ_LOG = """
INSERT INTO deliveries (event_id, chat_id, due_at, next_attempt_at, expires_at, thread, revision, quiet_held,
                        created_at)
SELECT e.id, c.id, COALESCE(e.due_at, :now),
       CASE WHEN c.held_until > COALESCE(e.due_at, :now) THEN c.held_until ELSE COALESCE(e.due_at, :now) END,
       e.expires_at, e.thread, e.revision,
       CASE WHEN c.held_quiet AND c.held_until > e.accepted_at AND c.held_until > COALESCE(e.due_at, e.accepted_at)
            THEN TRUE ELSE FALSE END, :now
FROM events e JOIN chats c ON c.id = :chat
WHERE e.id > :after AND e.id <= :upto AND NOT e.withdrawn AND c.status = 'active'
  AND EXISTS (
        SELECT 1 FROM subscriptions s
        LEFT JOIN chat_thresholds t ON t.chat_id = s.chat_id AND t.topic = s.topic
        WHERE s.chat_id = :chat AND s.topic = e.topic AND s.since_event < e.id
          AND s.venue IN ('*', e.venue)
          AND s.symbol IN ('*', UPPER(e.symbol), e.base)
          AND (e.usd_cents IS NULL OR COALESCE(s.min_usd_cents, t.min_usd_cents, 0) <= e.usd_cents)
          AND ((s.scope = 'all' AND (e.topic <> 'whale' OR e.subject IS NULL))
               OR (e.subject IS NOT NULL AND EXISTS (
                SELECT 1 FROM watchlist w WHERE w.chat_id = :chat AND w.address = e.subject))))
  AND NOT (e.fold_thread IS NOT NULL AND EXISTS (
        SELECT 1 FROM subscriptions s
        LEFT JOIN chat_thresholds t ON t.chat_id = s.chat_id AND t.topic = s.topic
        WHERE s.chat_id = :chat AND s.topic = 'cascade' AND s.since_event < e.id AND s.scope = 'all'
          AND s.venue IN ('*', e.venue)
          AND s.symbol IN ('*', UPPER(e.symbol), e.base)
          AND COALESCE(s.min_usd_cents, t.min_usd_cents, 0) <= e.fold_usd_cents))
  AND (e.audience IS NULL OR e.audience = c.id)
  AND (e.level IS NULL OR (',' || CASE WHEN e.topic = 'whale' THEN c.distance_warnings ELSE c.reminder_leads END
                           || ',') LIKE ('%,' || e.level || ',%'))
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.chat_id = :chat)
ORDER BY e.id
LIMIT :limit
ON CONFLICT (event_id, chat_id) DO NOTHING
RETURNING event_id, thread
"""

# Only a thread's newest revision waits: an older one pending beside a newer one, or one older than what
# the chat was already sent, is superseded (one statement per chunk that wrote a threaded row).
_SUPERSEDE = """
UPDATE deliveries SET status = 'superseded', last_error = 'a newer revision of its thread came first'
WHERE chat_id = :chat AND status = 'pending' AND thread IS NOT NULL AND (
    EXISTS (SELECT 1 FROM threads t WHERE t.chat_id = :chat AND t.thread = deliveries.thread
            AND t.revision > deliveries.revision)
    OR EXISTS (SELECT 1 FROM deliveries d WHERE d.chat_id = :chat AND d.status = 'pending'
               AND d.thread = deliveries.thread
               AND (d.revision > deliveries.revision OR (d.revision = deliveries.revision AND d.id > deliveries.id))))
"""

_DUE_FOR_CHAT = """
SELECT d.id, d.attempts, d.quiet_held, d.due_at, d.expires_at, d.thread, d.revision, e.body, e.body_version,
       e.withdrawn, t.message_ref AS edit_ref
FROM deliveries d JOIN events e ON e.id = d.event_id
LEFT JOIN threads t ON t.chat_id = d.chat_id AND t.thread = d.thread AND t.revision < d.revision
WHERE d.chat_id = ? AND d.status = 'pending' AND d.next_attempt_at <= ? AND d.id > ? ORDER BY d.id LIMIT ?
"""

# Chats with pending rows, a page at a time by chat id: the recursive step hops through the partial index
# of pending rows from one chat to the next (a skip scan), so a page costs a few seeks per chat whatever
# the number of rows, and no page holds the loop long however many chats wait.
_PENDING_CHATS = """
WITH RECURSIVE waiting(chat_id, n) AS (
    SELECT (SELECT MIN(chat_id) FROM deliveries WHERE status = 'pending' AND chat_id > :after), 1
    UNION ALL
    SELECT (SELECT MIN(d.chat_id) FROM deliveries d WHERE d.status = 'pending' AND d.chat_id > w.chat_id), w.n + 1
    FROM waiting w WHERE w.chat_id IS NOT NULL AND w.n < :limit
)
SELECT w.chat_id, (SELECT MIN(d.next_attempt_at) FROM deliveries d
                   WHERE d.status = 'pending' AND d.chat_id = w.chat_id) AS due
FROM waiting w WHERE w.chat_id IS NOT NULL ORDER BY w.chat_id
"""


class Outbox:
    def __init__(self, db: Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock
        self.head = 0
        """The newest event id this process knows of: a chat whose cursor is here has nothing to read."""
        self._decoded = _DecodedEvents()
        self._backlog: tuple[float, Backlog] | None = None
        self._counting: asyncio.Future[Backlog] | None = None

    async def refresh_head(self) -> int:
        row = await self.db.fetchone("SELECT COALESCE(MAX(id), 0) FROM events")
        self.head = max(self.head, int(row[0]) if row is not None else 0)
        return self.head

    async def accept(
        self, events: Sequence[Event], *, folds: Sequence[tuple[str, str, Decimal]] = ()
    ) -> list[AcceptResult]:
        """Store new events in the log in ONE transaction; a known key is a replay and is skipped.

        After this returns the alerts are on disk: a crash, restart, 429 or network fault cannot lose them,
        and accepting the same events again changes nothing. The cost is one row per event, whatever the
        number of chats that will hear of it. `folds` (key, cascade thread, the cascade's USD) marks
        liquidations a cascade stored in the same transaction carries, new ones or ones already in the log.
        """
        if not events:
            return []
        now = self.clock.now()
        values: list[Any] = []
        for event in events:
            values.extend(
                (
                    event.key,
                    event.topic.value,
                    event.source,
                    event.venue.value if event.venue else None,
                    event.symbol,
                    base_asset(event.symbol) if event.symbol else None,
                    format(event.usd, "f") if event.usd is not None else None,
                    to_cents(event.usd) if event.usd is not None else None,
                    event.occurred_at,
                    now,
                    event.model_dump_json(),
                    event.subject,
                    event.thread,
                    event.revision,
                    BODY_SCHEMA,
                    max(event.due_at, now) if event.due_at is not None else None,
                    event.expires_at,
                    side_of(event),
                    level_of(event),
                    event.audience,
                )
            )
        async with self.db.transaction() as tx:
            await tx.serialize("event_log")
            rows = await tx.fetch(
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES {','.join([_EVENT_MARKS] * len(events))} "  # noqa: S608
                # Only a known key is a replay; OR IGNORE would also swallow a NOT NULL violation.
                "ON CONFLICT (key) DO NOTHING RETURNING id, key",
                values,
            )
            if folds:
                await tx.executemany(
                    "UPDATE events SET fold_thread = ?, fold_usd_cents = ? WHERE key = ?",
                    [(thread, to_cents(total), key) for key, thread, total in folds],
                )
        ids = {str(r["key"]): int(r["id"]) for r in rows}
        if ids:
            self.head = max(self.head, *ids.values())
        results: list[AcceptResult] = []
        for event in events:
            event_id = ids.pop(event.key, None)  # a key twice in one batch: the second is the replay
            results.append(AcceptResult(key=event.key, new=event_id is not None, event_id=event_id))
        return results

    async def withdraw(self, thread: str, *, reason: str) -> int:
        """The thread's event moved or was cancelled: no chat reads it from the log any more, and its
        alerts already waiting are withdrawn, never sent. Returns the events withdrawn."""
        async with self.db.transaction() as tx:
            withdrawn = await tx.execute(
                "UPDATE events SET withdrawn = TRUE WHERE thread = ? AND NOT withdrawn", (thread,)
            )
            await tx.execute(
                "UPDATE deliveries SET status='withdrawn', last_error=? WHERE status='pending' AND thread=?",
                (f"withdrawn: {reason}", thread),
            )
        return withdrawn

    async def expire(self, ids: Sequence[int]) -> int:
        """Rows the dispatcher found past their `expires_at` leave the queue unsent: a stale alert helps
        nobody. (It finds them among the rows it reads anyway, so no statement is added per send.)"""
        return await self.db.execute(
            f"UPDATE deliveries SET status='expired', last_error='expired before it could be sent' "  # noqa: S608
            f"WHERE status='pending' AND id IN ({_marks(ids)})",
            tuple(ids),
        )

    async def probe(self) -> None:
        """A write lock taken and given back: raises StorageUnavailable while storage is still away."""
        async with self.db.transaction() as tx:
            await tx.serialize("probe")

    async def make_room(self) -> None:
        """Between commits of a flood: see `Engine.make_room`."""
        await self.db.make_room()

    # --- a chat's reading of the log -------------------------------------------------------------------
    async def read_log(
        self,
        chat_id: int,
        *,
        want: int,
        start_after: int = 0,
        now: datetime | None = None,
        pace: Callable[[], Awaitable[None]] = _next_pass,
    ) -> tuple[int, int]:
        """Write the chat's next deliveries from the log until it has `want` pending or has read to the
        head; returns the rows written and the chat's cursor after. `start_after` lets a caller that knows
        the chat matched nothing before an event (the dispatcher's index) skip the log up to it; it never
        moves a cursor back.

        Each chunk is its own transaction, visits at most `LOG_SPAN` events and writes at most `LOG_ROWS`
        rows; `pace` is awaited between chunks (by default a turn for every other task; the dispatcher
        passes its own turn-taking, so a chat far behind reads within the loop's slices)."""
        written = 0
        stamp = now or self.clock.now()
        while True:
            chunk = await self._read_chunk(chat_id, want=want, start_after=start_after, now=stamp)
            written += chunk.written
            if chunk.done:
                return written, chunk.cursor
            start_after = chunk.cursor
            await self.db.make_room()
            await pace()

    async def _read_chunk(self, chat_id: int, *, want: int, start_after: int, now: datetime) -> _Chunk:
        head = self.head
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                # Locks the chat's row (PostgreSQL) so two readers of one chat take turns; changes nothing.
                "UPDATE chats SET log_cursor = log_cursor WHERE id = ? RETURNING log_cursor, status",
                (chat_id,),
            )
            if row is None or row["status"] != "active":
                return _Chunk(0, head, done=True)
            after = max(int(row["log_cursor"]), min(start_after, head))
            if after >= head:
                if after > int(row["log_cursor"]):
                    await tx.execute("UPDATE chats SET log_cursor = ? WHERE id = ?", (after, chat_id))
                return _Chunk(0, after, done=True)
            pending = int(  # rows due later (a reminder days ahead) leave room for what is due now
                await tx.fetchval(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries WHERE chat_id = ? AND status = 'pending' "
                    "AND due_at <= ? LIMIT ?) AS p",
                    (chat_id, now, want),
                )
            )
            need = want - pending
            if need <= 0:
                if after > int(row["log_cursor"]):
                    await tx.execute("UPDATE chats SET log_cursor = ? WHERE id = ?", (after, chat_id))
                return _Chunk(0, after, done=True)
            upto = min(after + LOG_SPAN, head)
            limit = min(need, LOG_ROWS)
            inserted = await tx.fetch(
                _READ_LOG, {"chat": chat_id, "after": after, "upto": upto, "limit": limit, "now": now}
            )
            if any(r["thread"] is not None for r in inserted):
                await tx.execute(_SUPERSEDE, {"chat": chat_id})
            cursor = max(int(r["event_id"]) for r in inserted) if len(inserted) >= limit else upto
            await tx.execute("UPDATE chats SET log_cursor = ? WHERE id = ?", (cursor, chat_id))
        return _Chunk(len(inserted), cursor, done=len(inserted) >= need or cursor >= head)

    async def advance_cursors(self, chat_ids: Sequence[int], *, to: int) -> int:
        """Move these chats' cursors up to `to` without reading: the caller knows no event up to there is
        for them (the dispatcher's index saw every one). Keeps the cursors of chats that hear little near
        the head, so the log can be pruned behind them and a restart has little to read."""
        if not chat_ids:
            return 0
        return await self.db.execute(
            f"UPDATE chats SET log_cursor = ? WHERE log_cursor < ? AND id IN ({_marks(chat_ids)})",  # noqa: S608
            (to, to, *chat_ids),
        )

    async def due_for_chat(
        self,
        chat_id: int,
        now: datetime,
        *,
        limit: int,
        start_after: int = 0,
        read: bool = True,
        after_id: int = 0,
        pace: Callable[[], Awaitable[None]] = _next_pass,
    ) -> tuple[Chat | None, list[PendingDelivery]]:
        """The chat (as stored now: quiet hours, status) and its deliveries that may be tried at `now`, in
        the order they were accepted, each with the message its thread last sent (its edit target). What
        the chat has yet to read of the log is read first, up to `limit` rows waiting (unless the caller
        just did: `read=False`); the chat comes back with its cursor after that read, and a chat already at
        the head costs no write. `after_id` pages through a long backlog a few hundred rows at a time; `pace`
        is the read's, as in `read_log`.

        A row whose body no longer decodes comes back with `event=None` and the reason, so one bad row
        cannot jam its chat."""
        chat_row = await self.db.fetchone("SELECT * FROM chats WHERE id = ?", (chat_id,))
        if chat_row is None:
            return None, []
        chat = chat_from_row(chat_row)
        if read and chat.status == "active" and max(chat.log_cursor, start_after) < self.head:
            _, cursor = await self.read_log(chat_id, want=limit, start_after=start_after, now=now, pace=pace)
            chat = dataclasses.replace(chat, log_cursor=cursor)
        elif read and start_after > chat.log_cursor:  # skipped to the head: nothing to read, nothing written
            chat = dataclasses.replace(chat, log_cursor=min(start_after, self.head))
        rows = await self.db.fetch(_DUE_FOR_CHAT, (chat_id, now, after_id, limit))
        withdrawn = [int(r["id"]) for r in rows if as_bool(r["withdrawn"])]
        if withdrawn:  # read in the instant its thread was withdrawn (PostgreSQL: another connection)
            await self.db.execute(
                f"UPDATE deliveries SET status='withdrawn', last_error='withdrawn: its event was' "  # noqa: S608
                f"WHERE status='pending' AND id IN ({_marks(withdrawn)})",
                withdrawn,
            )
        return chat, [_pending(r, chat_id, self._decoded) for r in rows if not as_bool(r["withdrawn"])]

    async def next_due(self, chat_id: int) -> datetime | None:
        """When the chat's earliest waiting row may be tried (None: nothing waits)."""
        row = await self.db.fetchone(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE chat_id = ? AND status = 'pending'", (chat_id,)
        )
        return as_time(row[0]) if row is not None and row[0] is not None else None

    async def pending_chats(self, *, after: int = 0, limit: int = 500) -> list[tuple[int, datetime]]:
        """Chats with pending rows after chat id `after`, with when their earliest may be tried, by chat id."""
        rows = await self.db.fetch(_PENDING_CHATS, {"after": after, "limit": limit})
        return [(int(r[0]), as_time(r[1])) for r in rows]

    async def mark_sent(self, ids: Sequence[int], *, message_ref: str | None, now: datetime) -> None:
        """The platform accepted the message; with several ids they were merged into one summary.

        A thread's newest sent revision is remembered with where its message lives, so the next revision
        edits it; a revision that went out inside a summary leaves nothing to edit (the next one is sent).
        """
        ref = message_ref if len(ids) == 1 else None
        async with self.db.transaction() as tx:
            sent = await tx.fetch(
                f"UPDATE deliveries SET status='sent', sent_at=?, message_ref=?, attempts=attempts+1 "  # noqa: S608
                f"WHERE status='pending' AND id IN ({_marks(ids)}) RETURNING chat_id, thread, revision",
                (now, ref, *ids),
            )
            for row in sent:
                if row["thread"] is None:
                    continue
                await tx.execute(
                    "INSERT INTO threads (chat_id, thread, revision, message_ref, updated_at) VALUES (?,?,?,?,?) "
                    "ON CONFLICT (chat_id, thread) DO UPDATE SET revision=excluded.revision, "
                    "message_ref=excluded.message_ref, updated_at=excluded.updated_at "
                    "WHERE excluded.revision >= threads.revision",
                    (row["chat_id"], row["thread"], row["revision"], ref, now),
                )

    async def reschedule(self, ids: Sequence[int], *, at: datetime, error: str, count_attempt: bool) -> None:
        await self.db.execute(
            "UPDATE deliveries SET next_attempt_at=CASE WHEN due_at > :at THEN due_at ELSE :at END, "  # noqa: S608
            f"last_error=:error, attempts=attempts+:counted WHERE status='pending' AND id IN ({_named(ids)})",
            {"at": at, "error": error, "counted": 1 if count_attempt else 0, **_named_ids(ids)},
        )

    async def hold_chat(self, chat_id: int, *, until: datetime, error: str, quiet: bool = False) -> None:
        """Nothing goes to this chat before `until`: its pending rows wait, and so do rows written later.

        A platform's retry_after, a retry backoff and quiet hours all hold the whole chat, which keeps the
        chat's alerts in order and never sends into a flood ban. `quiet` marks the rows due in the window
        for the digest (and the events accepted before it ends, when the chat reads them); rows due after
        it are not touched.
        """
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE chats SET held_until=CASE WHEN held_until > :until THEN held_until ELSE :until END, "
                # a 429 inside quiet hours leaves them quiet; one past their end (or quiet=TRUE) decides anew
                "held_quiet=CASE WHEN :quiet THEN TRUE WHEN held_until > :until THEN held_quiet ELSE FALSE END "
                "WHERE id=:chat",
                {"until": until, "quiet": quiet, "chat": chat_id},
            )
            await tx.execute(
                "UPDATE deliveries SET next_attempt_at=CASE WHEN next_attempt_at > :until THEN next_attempt_at "
                "ELSE :until END, last_error=:error, quiet_held=(quiet_held OR :quiet) "
                "WHERE chat_id=:chat AND status='pending' AND due_at < :until",
                {"until": until, "error": error, "quiet": quiet, "chat": chat_id},
            )

    async def release_held(self, chat_id: int) -> None:
        """Quiet hours were switched off: what they held is due now (still sent as one digest). Rows due
        later (a reminder before its event) stay scheduled for their own time."""
        now = self.clock.now()
        async with self.db.transaction() as tx:
            await tx.execute(
                # The hold ends now; events accepted during it still go out in the digest when read.
                "UPDATE chats SET held_until=CASE WHEN held_until > :now THEN :now ELSE held_until END WHERE id=:chat",
                {"now": now, "chat": chat_id},
            )
            await tx.execute(
                "UPDATE deliveries SET next_attempt_at=CASE WHEN due_at > :now THEN due_at "
                "WHEN next_attempt_at < :now THEN next_attempt_at ELSE :now END "
                "WHERE chat_id=:chat AND status='pending'",
                {"now": now, "chat": chat_id},
            )

    async def park(self, ids: Sequence[int], *, reason: str) -> None:
        await self.db.execute(
            f"UPDATE deliveries SET status='parked', last_error=?, attempts=attempts+1 "  # noqa: S608
            f"WHERE id IN ({_marks(ids)})",
            (reason, *ids),
        )

    async def backlog(self, *, max_age_s: float = 0.0) -> Backlog:
        """Pending, scheduled and parked counts, and the chats still reading the log. These visit every
        waiting row, so they run off the loop (`Engine.fetch_slow`): /status, which anyone may send, must
        not stop the bot however long the queue grows. Callers asking at once share one count, and one
        younger than `max_age_s` is answered again, so a chat repeating /status costs nothing more.

        Rows due in the future (a reminder before its event) are scheduled, not backlog."""
        mono = self.clock.monotonic()
        if max_age_s > 0 and self._backlog is not None and mono - self._backlog[0] <= max_age_s:
            return self._backlog[1]
        if self._counting is None or self._counting.done():
            self._counting = asyncio.ensure_future(self._count_backlog())
        counted = await asyncio.shield(self._counting)
        self._backlog = (mono, counted)
        return counted

    async def _count_backlog(self) -> Backlog:
        now = self.clock.now()
        [pending] = await self.db.fetch_slow(
            "SELECT COUNT(*) FILTER (WHERE due_at <= :now), COUNT(*) FILTER (WHERE due_at > :now), "
            "MIN(CASE WHEN due_at <= :now THEN created_at END) FROM deliveries WHERE status='pending'",
            {"now": now},
        )
        [parked] = await self.db.fetch_slow("SELECT COUNT(*) FROM deliveries WHERE status='parked'")
        [behind] = await self.db.fetch_slow(
            "SELECT COUNT(*) FROM chats WHERE status='active' AND log_cursor < ?", (self.head,)
        )
        return Backlog(
            pending=int(pending[0]),
            scheduled=int(pending[1]),
            parked=int(parked[0]),
            oldest_pending_at=as_time(pending[2]) if pending[2] else None,
            behind=int(behind[0]),
        )

    async def prune(self, *, before: datetime, batch: int = 500) -> tuple[int, int]:
        """Forget delivered history older than `before`: (deliveries, events) removed.

        Pending rows are never touched, and an event goes only once no delivery of it is left and every
        active chat has read past it. Events are also the replay memory, so the retention must stay far
        longer than any venue re-sends (minutes).
        """
        deliveries = await self._prune_prefix(
            "deliveries", "created_at", "status <> 'pending'", cutoff=before, batch=batch
        )
        row = await self.db.fetchone(
            f"SELECT COALESCE(MIN(log_cursor), {self.head}) FROM chats WHERE status = 'active'"  # noqa: S608 - an int
        )
        read_by_all = int(row[0]) if row is not None else 0
        events = await self._prune_prefix(
            "events",
            "accepted_at",
            # The newest event stays, whatever its age: SQLite would hand its id out again, and a cursor past
            # it would never see the next event.
            f"id <= {int(read_by_all)} AND id < (SELECT MAX(id) FROM events) "  # noqa: S608
            "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
            cutoff=before,
            batch=batch,
        )
        return deliveries, events

    async def _prune_prefix(self, table: str, stamped: str, removable: str, *, cutoff: datetime, batch: int) -> int:
        """Delete the removable rows among the table's oldest, walking ids upwards `batch` rows at a time.

        Ids grow with the time each row was stamped, so the rows older than the cutoff come first: the walk
        reads each id range once and stops at the first range with none of them, without an index on the
        time column (one more index to write for every delivery) and without scanning what is kept. A row
        stamped out of order (the clock was stepped) neither stops the walk nor is removed early; an old
        row behind a whole range of newer ones waits for a later prune. Between ranges the engine gets a
        turn (`Engine.make_room`): the first prune after a busy month removes millions of rows, and the
        loop must not stop for it.
        """
        removed = 0
        after = 0
        while True:
            rows = await self.db.fetch(
                f"SELECT id, CASE WHEN {stamped} < ? THEN 1 ELSE 0 END AS old FROM {table} "  # noqa: S608 - fixed names
                "WHERE id > ? ORDER BY id LIMIT ?",
                (cutoff, after, batch),
            )
            if not any(row[1] for row in rows):
                return removed
            last = int(rows[-1][0])
            removed += await self.db.execute(
                f"DELETE FROM {table} WHERE id > ? AND id <= ? AND {stamped} < ? AND {removable}",  # noqa: S608
                (after, last, cutoff),
            )
            if len(rows) < batch:
                return removed
            after = last
            await self.db.make_room()


def _marks(ids: Sequence[int]) -> str:
    """`?,?,?` for an IN list: placeholders, never values, in the SQL text."""
    if not ids:
        raise ValueError("no delivery ids")
    return ",".join("?" * len(ids))


def _named(ids: Sequence[int]) -> str:
    if not ids:
        raise ValueError("no delivery ids")
    return ",".join(f":id{i}" for i in range(len(ids)))


def _named_ids(ids: Sequence[int]) -> dict[str, int]:
    return {f"id{i}": v for i, v in enumerate(ids)}


class _DecodedEvents:
    """Events decoded from their stored bodies, the newest `limit` kept, shared by every chat that reads them.

    A burst that 100,000 chats hear is the same few thousand events read by each: decoded once, not once
    per chat, and one object each, not one per row (decoded copies per row made the cyclic collector's
    full passes walk 40,000-80,000 objects, 20-55 ms each, in bench/pipeline.py drain-typical). Keyed by
    the stored body itself, so a reused id can never bring back another event; an Event is frozen, so
    sharing it is safe."""

    __slots__ = ("_events", "limit")

    def __init__(self, limit: int = 2048) -> None:
        self.limit = limit
        self._events: dict[tuple[int, str], Event] = {}

    def get(self, body: str, version: int) -> Event:
        key = (version, body)
        event = self._events.get(key)
        if event is None:
            event = decode_event(body, version)
            if len(self._events) >= self.limit:
                del self._events[next(iter(self._events))]  # the oldest decoded: reads follow the log's order
            self._events[key] = event
        return event


def _pending(row: Row, chat_id: int, decoded: _DecodedEvents) -> PendingDelivery:
    event: Event | None = None
    error: str | None = None
    try:
        event = decoded.get(row["body"], row["body_version"])
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        error = f"stored body does not decode (schema {row['body_version']}): {str(exc).splitlines()[0][:200]}"
    return PendingDelivery(
        id=row["id"],
        chat_id=chat_id,
        attempts=row["attempts"],
        event=event,
        due_at=as_time(row["due_at"]),
        expires_at=as_time(row["expires_at"]) if row["expires_at"] else None,
        quiet_held=as_bool(row["quiet_held"]),
        thread=row["thread"],
        revision=row["revision"],
        edit_ref=row["edit_ref"],
        decode_error=error,
    )


def level_of(event: Event) -> str | None:
    """A distance warning's step in percent ('10', '7.5'), or a reminder's lead time ('24h', a body's
    `lead`): a chat hears the steps and lead times it chose (/distance, /leads)."""
    if isinstance(event.body, DistanceBody):
        return percent_text(event.body.threshold)
    lead = getattr(event.body, "lead", None)
    return lead if isinstance(lead, str) else None


def percent_text(fraction: Decimal) -> str:
    """0.075 -> '7.5', 0.1 -> '10': how a step is written in the log and in a chat's list alike."""
    return format((fraction * 100).normalize(), "f")


def side_of(event: Event) -> str | None:
    """The position side an event is about, where its body has one (a liquidation): a column, so a
    window's totals by side are summed in the database."""
    side = getattr(event.body, "side", None)
    return side.value if isinstance(side, PositionSide) else None


def decode_event(body: str, version: int) -> Event:
    """A stored body of any schema this release knows, as today's Event. Version 1 bodies lack the v2
    envelope fields, which take their defaults; a version from a newer release is refused, not guessed."""
    if version > BODY_SCHEMA:
        raise ValueError(f"schema {version} is newer than this release ({BODY_SCHEMA})")
    return Event.model_validate_json(body)
