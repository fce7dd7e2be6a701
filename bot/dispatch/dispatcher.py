"""Drains the outbox to the platforms: one worker per chat at a time, in order, paced, restart-safe.

Each chat with something to send (new events it may hear of, due deliveries, a command answer) gets a
worker that sends in order, so per-chat order holds and one slow or rate-limited chat never stalls another.
Workers are a bounded pool: a chat waits its turn in a queue, and a chat that may not send yet (a 429, a
pacing slot, quiet hours, a reminder due later) waits on a timer, not in a task. So one pass of scheduling
costs what the chats that can be sent to now cost, whatever the number that wait. Which chats an accepted
event concerns the in-memory `InterestIndex` tells, without a query. A delivery row leaves
'pending' only after the platform accepted the message, so a crash at any point re-sends at most the one
message in flight (and, while the database cannot be written, the one message per chat it could not yet
record), and a restart simply finds the rows still pending.

What each send carries is `batching`'s decision, taken at the moment the chat may send; when it may send is
`pacing`'s; what happens while storage is away is `outage`'s. Command answers wait in memory in front of
the chat's alerts and share their pacing and holds: a 429 on an answer holds the chat's alerts too, and an
answer is never dropped for a 429, it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from bot.dispatch import batching
from bot.dispatch.interest import InterestIndex
from bot.dispatch.outage import StorageOutage, Unrecorded
from bot.dispatch.pacing import Pacer
from bot.families import render_event, render_summary
from bot.platforms.delivery import (
    ChatMoved,
    Message,
    MessageGone,
    MessageRef,
    PermanentFailure,
    Platform,
    RetryLater,
    TransientFailure,
    Unauthorized,
)
from bot.quiet import QUIET_HOLD, QuietHours
from bot.render import Alert, Reply
from perpwatch.backoff import half_jitter
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Event, Topic
from storage import ChatRepo, Outbox, StorageUnavailable
from storage.models import AcceptResult, Chat, PendingDelivery

log = logging.getLogger(__name__)

MERGE_MAX = 500
"""Most rows merged into one summary or digest; a larger backlog becomes several, still nothing dropped.
Marking a summary's rows sent is one transaction (a crash must leave all or none of them pending), and
that commit runs in one step of the loop: its cost grows with the rows, so this bounds it (what larger
summaries cost: bench/pipeline.py --profile, drain-typical at 100,000 chats; figures in the README)."""

SUMMARY_PAGE = 50
"""Rows a summary reads and decodes at once, in one step of the loop: a page must fit in a slice."""

PAGE = 101
"""Rows a worker reads at once: more than any platform sends a chat in a minute."""

SLICE_S = 0.003
"""Work the dispatcher's workers do in one pass of the event loop before the rest wait for the next pass.
A worker that never waits on real I/O (SQLite, a fast platform) would otherwise run its whole backlog in
one step, and 256 of them ready together held the loop for 75-190 ms (bench/pipeline.py, due1). A task
woken by a socket waits about two passes (the callback that reads sets a future, the task runs next
pass), so a pass must stay well under half of the 25 ms the loop may be held: 5 ms slices, often overrun
by a unit, made passes of 5-12 ms and holds of 25-35 ms; 3 ms keeps them at 4-8 ms."""

SWEEP_PAGE = 500
"""Chats a sweep of the outbox reads per query (restart, storage back, the slow safety sweep)."""

SWEEP_AHEAD = 2 * SWEEP_PAGE
"""Chats a sweep leaves waiting for a worker before it pauses; it goes on when fewer than a page wait. A
sweep that queued every due chat at once (100,000 at a restart) grew the queue's set until Python rehashed
all of it in one step of the loop (bench/pipeline.py due1 on PostgreSQL), and held every id in memory while
only `max_workers` of them could be sent to."""

SWEEP_SPAN = 5000
"""Chat ids one query of the sweep for chats behind the log looks through: bounded by ids, not by matches,
so a sweep that finds none reads the table in short steps, not in one statement over every chat."""

SWEEP_EVERY_S = 60.0
"""The outbox is swept for chats nobody woke this often: timers and wake-ups do the real work, and a sweep
costs a page per 500 waiting chats."""

RATE_LIMIT_LOG_EVERY_S = 30.0
"""429s are logged once per platform per this long, with the count: a flood ban on 10,000 chats is one
line, not 10,000."""

LATENCY_TARGET_S = 4.0
"""Every due alert is represented in a message within this long when the platform allows it (a Telegram
group takes one message every 3 s, so a backlog there is merged rather than queued)."""


@dataclass
class DispatchStats:
    sent: int = 0
    edited: int = 0
    merged: int = 0
    retried: int = 0
    parked: int = 0
    rate_limited: int = 0
    storage_faults: int = 0
    replies: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Alerts that left the outbox unsent, by reason (expired, superseded at send time, undecodable)."""
    outcomes: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    """Alert rows that reached a final state here, by (platform, sent | parked | expired): the totals above
    cannot tell an operator which platform is failing."""
    rate_limited_by: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    held_s_by: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    """429s by platform, and the seconds of holds they asked for: the cost of a flood limit, not its count."""


@dataclass
class _Answers:
    chat: Chat
    queue: list[tuple[Reply, str | None]] = field(default_factory=list)
    attempts: int = 0


@dataclass(slots=True)
class _Batch:
    """What one send carries: the rows' ids and events, not the rows. A summary's rows, held by many workers
    at once, were most of what the cyclic collector walked on a full pass (bench/pipeline.py --profile,
    drain-broad); a list of ids and one of shared events is two objects per summary instead of one a row."""

    ids: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    attempts: int = 0
    """The most tries any of its rows has had: a retry backs off from there."""
    edit_ref: str | None = None
    """Where the thread's last message lives when this send is its edit (a lone row's)."""

    @classmethod
    def of(cls, rows: Sequence[PendingDelivery]) -> _Batch:
        batch = cls(edit_ref=rows[0].edit_ref if len(rows) == 1 else None)
        batch.add(rows)
        return batch

    def add(self, rows: Iterable[PendingDelivery]) -> None:
        for row in rows:
            self.ids.append(row.id)
            if row.event is not None:
                self.events.append(row.event)
            if row.attempts > self.attempts:
                self.attempts = row.attempts


class _Outcome(Enum):
    NEXT = "next"
    STOP = "stop"
    RELOAD = "reload"


class Dispatcher:
    """Sends what the pipeline accepted. `notify()` wakes it at once; otherwise it wakes when rows fall due."""

    def __init__(
        self,
        outbox: Outbox,
        chats: ChatRepo,
        platforms: Sequence[Platform],
        *,
        clock: Clock = SYSTEM_CLOCK,
        pacing: bool = True,
        backoff_initial_s: float = 2.0,
        backoff_max_s: float = 600.0,
        max_workers: int = 256,
        idle_poll_s: float = SWEEP_EVERY_S,
        latency_target_s: float = LATENCY_TARGET_S,
        shutdown_grace_s: float = 6.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.outbox = outbox
        self.chats = chats
        self.platforms = {p.name: p for p in platforms}
        self.clock = clock
        self.pacing = pacing
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.idle_poll_s = idle_poll_s
        self.latency_target_s = latency_target_s
        self.shutdown_grace_s = shutdown_grace_s
        self._rand = rand
        self.stats = DispatchStats()
        self.sent_listeners: list[Callable[[str, Sequence[Event], datetime], None]] = []
        """Told of each message the platform accepted (platform, the events it carried, when): what measures latency
        without the dispatcher knowing who measures."""
        self.outage = StorageOutage(clock)
        self.pacers = {p.name: Pacer(p.limits, clock) for p in platforms}
        self.disabled: dict[str, str] = {}
        """Platforms that refused our token mid-run, with the reason: nothing is sent there until restart."""
        self.max_workers = max_workers
        self.interest = InterestIndex(chats)
        chats.listeners.append(self._chat_changed)
        self._wake = asyncio.Event()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._queue: deque[int] = deque()
        self._queued: set[int] = set()
        self._timers: list[tuple[float, int]] = []
        self._timer_at: dict[int, float] = {}
        self._first_match: dict[int, int] = {}
        """Chats woken by an event, and the first such event since the chat last read the log."""
        self._read_to_head: set[int] = set()
        """Chats this process saw read the log to its head: every later event went through `interest`, so
        such a chat may skip the log up to its first match."""
        self._refreshing: dict[int, asyncio.Task[None]] = {}
        self._unsettled: dict[int, int] = {}
        """Chats whose subscriptions changed and are not yet indexed anew, with the change's generation: the
        index may miss what they hear now, so they neither skip the log nor have their cursor moved."""
        self._recording: dict[int, asyncio.Future[None]] = {}
        """Chats whose sent message is being marked sent now: other workers wait for it, never repeat it."""
        self._db_turns = asyncio.Semaphore(max(1, outbox.db.concurrency))
        """Workers take turns for their database work, as many at once as the engine can overlap (one on
        SQLite, whose statements never yield): 256 workers ready in one pass of the loop would otherwise run
        back to back before any socket or timer got a turn (measured: passes of 1.6-1.9 s)."""
        self._slice_start = time.perf_counter()
        self._slice_reset = False
        self._slice_waiters: deque[asyncio.Future[None]] = deque()
        self._deferred: list[asyncio.Future[None]] = []
        """Workers let go that found the slice already spent: first in line for the next one."""
        self._step_s = 0.001
        """What one worker that ran in a slice recently cost the loop (a moving average), to size the next."""
        self._ran = 0
        self._accepted_upto = 0
        """The newest event id `accepted` was told of: idle cursors move no further than this."""
        self._sweep_due = True
        self._next_sweep = 0.0
        self._sweep_at: tuple[str, int, int] | None = None
        """Where a sweep in progress goes on: its phase ('due' or 'behind'), the last chat id it looked at,
        and (for 'behind') the highest chat id there was when it began."""
        self._rate_limits: dict[str, tuple[float, int]] = {}
        self._answers: dict[int, _Answers] = {}
        self._gone_logged: set[int] = set()
        self._dirty: set[int] = set()
        self._stopping = False

    # --- what the pipeline and the chat front ends call ----------------------------------------------
    def notify(self, chat_ids: Iterable[int] = ()) -> None:
        """Something may be waiting for these chats: give them a worker (or a place in the queue) now.

        A chat whose worker is busy is marked dirty so the worker reads again before it stops. With no ids,
        sweep the whole outbox on the next pass.
        """
        if self._stopping:
            return
        ids = list(chat_ids)
        if not ids:
            self._sweep_due = True
            self._wake.set()
        for chat_id in ids:
            self._enqueue(chat_id)

    def accepted(self, events: Sequence[Event], results: Sequence[AcceptResult]) -> None:
        """The pipeline committed these events: wake the chats that may hear of them.

        A chat woken and not yet read costs nothing more (`InterestIndex.wake` looks only at sleeping
        ones), so a flood costs per event what its newly woken chats cost, not what every concerned chat does."""
        woken: set[int] = set()
        for event, result in zip(events, results, strict=True):
            if result.event_id is None:
                continue
            fresh = self.interest.wake(event)
            # In bulk, the older first match kept where there is one: what it costs follows the chats this
            # event woke, never the chats already woken (copying those made one commit of a flood's first
            # events hold the loop 20-36 ms at 100,000 chats).
            self._first_match.update(dict.fromkeys(fresh.difference(self._first_match), result.event_id))
            woken |= fresh
            self._accepted_upto = max(self._accepted_upto, result.event_id)
        if self._stopping or not woken:
            return
        # In bulk, with set operations: the first event of a flood wakes every chat at once (100,000 calls of
        # _enqueue held the loop about 30 ms). A held chat's worker sees the hold and sets its timer again.
        busy = woken & self._workers.keys()
        self._dirty |= busy
        waiting = woken - busy - self._queued
        for chat_id in list(itertools.islice(waiting, max(0, self.max_workers - len(self._workers)))):
            waiting.discard(chat_id)
            self._start_worker(chat_id)
        self._queue.extend(waiting)
        self._queued |= waiting

    def forget_hints(self) -> None:
        """An accept whose outcome is unknown (its commit may have gone through while its answer was lost) or
        whose wake-up failed: some event may be in the log without `accepted` having seen it, so no chat
        skips the log or has its cursor moved until it has read to the head again."""
        self._read_to_head.clear()

    def _chat_changed(self, chat_id: int) -> None:
        """What the chat hears changed: index it anew, then let it read the log from its own cursor."""
        self._read_to_head.discard(chat_id)
        self._unsettled[chat_id] = self._unsettled.get(chat_id, 0) + 1
        self._start_refresh(chat_id)

    def _start_refresh(self, chat_id: int) -> None:
        if chat_id in self._refreshing or self._stopping:
            return  # the running refresh sees the newer generation and goes round again
        task = asyncio.get_running_loop().create_task(self._refresh(chat_id), name=f"dispatch:interest:{chat_id}")
        self._refreshing[chat_id] = task
        task.add_done_callback(lambda _t: self._refreshing.pop(chat_id, None))

    async def _refresh(self, chat_id: int) -> None:
        """Until what it read is the newest change: two changes close together end with the second indexed."""
        while (generation := self._unsettled.get(chat_id)) is not None:
            try:
                fresh = await self.interest.fetch(chat_id)
            except StorageUnavailable as exc:  # stays unsettled; the sweep after the outage tries again
                self._storage_fault(exc, chat_id)
                return
            if self._unsettled.get(chat_id) == generation:
                self.interest.replace(chat_id, fresh)
                del self._unsettled[chat_id]
        self._read_to_head.discard(chat_id)
        self.notify([chat_id])

    def _enqueue(self, chat_id: int, *, first: bool = False) -> None:
        """`first`: ahead of the chats waiting for a worker (a chat whose wait is over has older alerts)."""
        if self._stopping:
            return
        if chat_id in self._workers:
            self._dirty.add(chat_id)
        elif len(self._workers) < self.max_workers:
            self._start_worker(chat_id)
        elif chat_id not in self._queued:
            self._queued.add(chat_id)
            if first:
                self._queue.appendleft(chat_id)
            else:
                self._queue.append(chat_id)

    def _timer(self, chat_id: int, after_s: float) -> None:
        """Look at the chat again in `after_s` (the earliest of its timers wins)."""
        at = self.clock.monotonic() + max(after_s, 0.0)
        current = self._timer_at.get(chat_id)
        if current is not None and current <= at:
            return
        self._timer_at[chat_id] = at
        heapq.heappush(self._timers, (at, chat_id))
        self._wake.set()

    async def reply(self, chat: Chat, reply: Reply, reply_to: str | None) -> None:
        """Queue a command's answer in front of the chat's alerts (the front ends' `ReplySender`)."""
        answers = self._answers.setdefault(chat.id, _Answers(chat=chat))
        answers.chat = chat
        answers.queue.append((reply, reply_to))
        self.notify([chat.id])

    def _start_worker(self, chat_id: int) -> None:
        self._timer_at.pop(chat_id, None)  # its timer, if any, is stale now
        task = asyncio.create_task(self._drain(chat_id), name=f"dispatch:chat:{chat_id}")
        self._workers[chat_id] = task
        task.add_done_callback(functools.partial(self._worker_done, chat_id))

    def _worker_done(self, chat_id: int, _task: asyncio.Task[None]) -> None:
        self._workers.pop(chat_id, None)
        if self._stopping:
            return
        if chat_id in self._dirty:  # new rows arrived as the worker was finishing: go again
            self._dirty.discard(chat_id)
            self._start_worker(chat_id)
        while self._queue and len(self._workers) < self.max_workers:
            queued = self._queue.popleft()
            self._queued.discard(queued)
            if queued not in self._workers:
                self._start_worker(queued)
        if self._sweep_at is not None and len(self._queue) < SWEEP_PAGE:
            self._wake.set()  # the paused sweep goes on

    # --- the scheduler ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled: index who hears what, sweep the outbox once, then start the chats whose timers
        fall due and sleep until the next timer or wake-up."""
        try:
            while True:
                self._wake.clear()
                timeout = await self._schedule()
                await self.clock.wait(self._wake, timeout)
        finally:
            await self._shut_down()

    async def _schedule(self) -> float:
        """One pass: returns how long the scheduler may sleep before the next one."""
        probe_in = self.outage.probe_in_s()
        if probe_in is not None:
            if probe_in > 0:
                return min(self.idle_poll_s, probe_in)
            try:
                await self.outbox.probe()
            except StorageUnavailable as exc:
                self.outage.probe_failed(exc)
                return self.outage.probe_in_s() or self.idle_poll_s
            self.outage.ended()
            self._sweep_due = True  # what the outage stopped is picked up again
        mono = self.clock.monotonic()
        if self._sweep_due or mono >= self._next_sweep:
            self._next_sweep = mono + self.idle_poll_s
            if not await self._sweeping(self._start_sweep):
                return 0.0
        if self._sweep_at is not None and len(self._queue) < SWEEP_PAGE:
            if not await self._sweeping(self._sweep_on):
                return 0.0
        mono = self.clock.monotonic()
        back: list[int] = []
        while self._timers and self._timers[0][0] <= mono:
            at, chat_id = heapq.heappop(self._timers)
            if self._timer_at.get(chat_id) == at:
                del self._timer_at[chat_id]
                back.append(chat_id)
        # Chats back from a 429 or at their pacing slot go before chats not yet tried, in the order their
        # waits ended: behind a long queue (a flood refusing every chat's first send, bench due1-429) they
        # waited for every first try, and their alerts are the older ones.
        for chat_id in reversed(back):
            self._enqueue(chat_id, first=True)
        timeout = self._next_sweep - mono
        if self._timers:
            timeout = min(timeout, self._timers[0][0] - mono)
        for chat_id, answers in list(self._answers.items()):
            held_for = self._held_for(answers.chat)
            if held_for > 0:
                timeout = min(timeout, held_for)
            elif chat_id not in self._workers:
                self._enqueue(chat_id)
        return max(timeout, 0.0)

    async def _advance_sleepers(self) -> None:
        """Chats this process saw read to the head and that no event woke since: nothing up to the head is
        theirs, so their cursors move there without a read (a page of chats per statement)."""
        if not self.interest.loaded:
            return
        head = self._accepted_upto  # not the log's head: an event committed but not yet shown to `accepted`
        # Filtered a page at a time, each page as it is written: one pass over every sleeper held the loop
        # too long at scale (bench/pipeline.py drain-typical). A chat woken, reading or re-indexed since the snapshot
        # is left alone, and a cursor only ever moves forward, so a chat that read past `head` meanwhile is
        # not moved back.
        sleepers = list(self._read_to_head)
        for start in range(0, len(sleepers), SWEEP_PAGE):
            idle = [
                c
                for c in sleepers[start : start + SWEEP_PAGE]
                if c in self._read_to_head
                and c not in self._first_match
                and c not in self._workers
                and c not in self._unsettled
            ]
            if idle:
                await self.outbox.advance_cursors(idle, to=head)
            await asyncio.sleep(0)  # a page per pass: 100,000 idle chats are 200 statements

    async def _sweeping(self, step: Callable[[], Awaitable[None]]) -> bool:
        """Run a part of a sweep; False when storage went away (the sweep starts again once it is back)."""
        try:
            await step()
        except StorageUnavailable as exc:
            self._sweep_at = None
            self._storage_fault(exc)
            return False
        except Exception:  # a bug must not stop every chat's alerts; look again after the idle poll
            self._sweep_at = None
            log.exception("dispatch sweep failed")
        return True

    async def _start_sweep(self) -> None:
        """Every chat with rows waiting, and every chat behind the log's head, a page at a time: at start,
        when storage is back, and now and then in case a wake-up was missed. It pauses while `SWEEP_AHEAD`
        chats wait for a worker, and goes on as they get one."""
        self._sweep_due = False
        self._sweep_at = None
        await self._advance_sleepers()  # first: the sweep then has only the chats really behind
        if not self.interest.loaded:
            self._read_to_head.clear()  # the hints rest on the index: none until chats read to the head again
            await self.interest.load()
        for chat_id in list(self._unsettled):  # a refresh an outage cut short
            self._start_refresh(chat_id)
        await self.outbox.refresh_head()
        self._sweep_at = ("due", 0, 0)
        await self._sweep_on()

    async def _sweep_on(self) -> None:
        while self._sweep_at is not None and len(self._queue) < SWEEP_AHEAD and not self._stopping:
            phase, after, last = self._sweep_at
            if phase == "due":
                page = await self.outbox.pending_chats(after=after, limit=SWEEP_PAGE)
                now = self.clock.now()
                for chat_id, due_at in page:
                    wait_s = (due_at - now).total_seconds()
                    if wait_s > 0:
                        self._timer(chat_id, wait_s)
                    else:
                        self._enqueue(chat_id)
                if len(page) == SWEEP_PAGE:
                    self._sweep_at = ("due", page[-1][0], 0)
                else:  # a chat made after this moment starts at the head
                    self._sweep_at = ("behind", 0, await self.chats.last_id())
            elif after < last:
                upto = after + SWEEP_SPAN
                behind = await self.chats.active_behind(self.outbox.head, after=after, limit=SWEEP_PAGE, upto=upto)
                for chat_id in behind:  # a chat on a timer reads too: what it waits for may be hours away
                    self._enqueue(chat_id)
                self._sweep_at = ("behind", behind[-1] if len(behind) == SWEEP_PAGE else upto, last)
            else:
                self._sweep_at = None
            await asyncio.sleep(0)

    async def _shut_down(self) -> None:
        """Let each worker finish the send in flight (and record it), then cancel what is left.

        Cancelling a send mid-flight would re-send, after the restart, a message the platform may already
        have delivered; workers stop before their next send once `_stopping` is set.
        """
        self._stopping = True
        for task in list(self._refreshing.values()):
            task.cancel()
        workers = list(self._workers.values())
        if workers:
            await asyncio.wait(workers, timeout=self.shutdown_grace_s)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        with contextlib.suppress(StorageUnavailable):  # one last try; what stays is sent again after restart
            await self._record_all_unrecorded()
        if self.outage.unrecorded:
            log.error(
                "stopping with sent alerts not recorded, they will be sent again chats=%d", len(self.outage.unrecorded)
            )
        unanswered = sum(len(a.queue) for a in self._answers.values())
        if unanswered:
            log.warning("stopping with command answers not sent answers=%d", unanswered)

    async def idle(self) -> bool:
        """True when nothing is being sent and nothing is due: for tests and the demo's exit. Chats still
        behind the log read it first (what their worker would do), so what they hear counts."""
        if self._workers or self._answers or self._queue or self._sweep_at is not None:
            return False
        for chat_id in await self.chats.active_behind(self.outbox.head, after=0, limit=10_000):
            await self.outbox.read_log(chat_id, want=PAGE)
        now = self.clock.now()
        pending = await self.outbox.pending_chats(limit=10_000)
        return not self._workers and all(due_at > now for _, due_at in pending)

    # --- one chat ------------------------------------------------------------------------------------
    async def _drain(self, chat_id: int) -> None:
        try:
            await self._drain_chat(chat_id)
        except asyncio.CancelledError:
            raise
        except StorageUnavailable as exc:  # the sweep after the outage starts the chat again
            self._storage_fault(exc, chat_id)
        except Exception:
            # A bug must not kill the dispatcher; the rows stay pending and are tried again.
            log.exception("dispatch worker failed chat=%d", chat_id)
            self._timer(chat_id, 1.0)

    @contextlib.asynccontextmanager
    async def _unit(self) -> AsyncIterator[None]:
        """One unit of a worker's database work: its turn in the loop's slices, then the engine's."""
        await self._my_turn()
        async with self._db_turns:
            yield

    async def _next_chunk(self) -> None:
        """Between the chunks of a long read of the log, inside a unit: the engine's turn is given back while
        the worker waits for its next turn in the loop's slices, so a chat far behind (thousands of events
        to read for one summary) takes many slices, never one long step."""
        self._db_turns.release()
        try:
            await self._my_turn()
        finally:
            await self._db_turns.acquire()

    async def _my_turn(self) -> None:
        """Go on while this pass of the loop has run less than `SLICE_S` of dispatch work and nobody waits;
        else wait in line. Each pass lets about a slice's worth of waiting workers go (by the recent cost of
        a unit), and each of them looks at the clock again as it starts: the estimate is a guess (a unit may
        be a read, a render and a send, or only a commit), the clock is not, so one that finds the slice
        spent goes back to the front of the line instead of running past it."""
        if not self._slice_waiters and time.perf_counter() - self._slice_start <= SLICE_S:
            return
        loop = asyncio.get_running_loop()
        front = False
        while True:
            turn: asyncio.Future[None] = loop.create_future()
            if front:
                self._deferred.append(turn)
            else:
                self._slice_waiters.append(turn)
            self._next_slice()
            await turn
            if time.perf_counter() - self._slice_start <= SLICE_S:
                self._ran += 1
                return
            front = True

    def _next_slice(self) -> None:
        if not self._slice_reset:
            self._slice_reset = True
            asyncio.get_running_loop().call_soon(self._new_slice)

    def _new_slice(self) -> None:
        """Runs at the end of a pass: the workers that ran in it size the next one, by what the pass cost per
        worker."""
        now = time.perf_counter()
        if self._ran:
            self._step_s += ((now - self._slice_start) / self._ran - self._step_s) * 0.3
        self._slice_reset = False
        self._slice_start = now
        if self._deferred:  # the slice ran out before their turn: they go first, in the order they came
            self._slice_waiters.extendleft(reversed(self._deferred))
            self._deferred.clear()
        budget = max(1, int(SLICE_S / max(self._step_s, 1e-5)))
        self._ran = 0
        let_go = 0
        while let_go < budget and self._slice_waiters:
            turn = self._slice_waiters.popleft()
            if not turn.done():  # a worker cancelled while waiting has left the line
                turn.set_result(None)
                let_go += 1
        if self._slice_waiters:
            self._next_slice()

    async def _drain_chat(self, chat_id: int) -> None:
        """Send the chat's answers and due rows in order until none are left; stop early on a hold or park,
        leaving a timer for when the chat may go on."""
        while not self._stopping:
            if self.outage.paused():
                return  # the rows stay pending; the sweep after the outage picks the chat up
            async with self._unit():
                await self._record_unrecorded(chat_id)  # before anything is read, or it would be sent again
                self._dirty.discard(chat_id)
                now = self.clock.now()
                first = self._first_match.pop(chat_id, None)
                self.interest.sleep(chat_id)  # from here on a new event for it wakes it (and marks it dirty)
                skip_to = first - 1 if first is not None and chat_id in self._read_to_head else 0
                self._read_to_head.discard(chat_id)
                chat, due = await self.outbox.due_for_chat(
                    chat_id, now, limit=PAGE, start_after=skip_to, pace=self._next_chunk
                )
                cursor = chat.log_cursor if chat is not None else self.outbox.head
                due = await self._drop_expired(due, now, chat.platform if chat is not None else "")
            answers = self._answers.get(chat_id)
            if chat is None:
                if answers is None:
                    return
                chat = answers.chat
            platform = self.platforms.get(chat.platform)
            if platform is None or platform.name in self.disabled:
                return  # e.g. its token was removed or revoked: the rows wait for the platform to return
            held_for = self._held_for(chat)
            if held_for > 0:  # a 429 or a back-off: alerts and answers alike wait it out
                self._timer(chat_id, held_for)
                return
            if self.pacing and (due or (answers is not None and answers.queue)):
                wait_s = self.pacers[platform.name].wait_s(chat.id, group=chat.is_group)
                if wait_s > 0:  # its next slot is later: wait on a timer, not in a worker
                    self._timer(chat_id, wait_s)
                    return
            if answers is not None and answers.queue:
                if await self._send_answers(chat, platform, answers) is _Outcome.STOP:
                    return
                continue
            if not due:
                if (
                    cursor >= self.outbox.head
                    and chat_id not in self._dirty
                    and chat_id not in self._unsettled
                    and self.interest.loaded
                ):
                    self._read_to_head.add(chat_id)
                next_due = await self.outbox.next_due(chat_id)
                if next_due is not None:
                    self._timer(chat_id, (next_due - self.clock.now()).total_seconds())
                return
            undecodable = [d for d in due if d.event is None]
            if undecodable:
                for d in undecodable:
                    await self._park(chat, [d.id], d.decode_error or "stored body does not decode", chat_gone=False)
                    self.stats.dropped["undecodable"] += 1
                continue
            quiet = QuietHours.of(chat)
            if quiet is not None and quiet.active(now):
                until = quiet.ends_after(now)
                async with self._unit():
                    await self.outbox.hold_chat(chat_id, until=until, error=QUIET_HOLD, quiet=True)
                self._timer(chat_id, (until - self.clock.now()).total_seconds())
                log.info("holding alerts for quiet hours chat=%d until=%s", chat_id, until.isoformat())
                return
            decision = self._plan(chat, platform, due)
            shape, batch, read_all = decision.shape, _Batch.of(decision.rows), decision.read_all
            del due, decision  # from here only the batch lives on, through a long read and the send (see _Batch)
            if read_all:
                async with self._unit():
                    batch = await self._everything_due(chat_id, now, chat.platform)
            outcome = await self._send(chat, platform, shape, batch)
            if outcome is _Outcome.STOP:
                return
            if outcome is _Outcome.RELOAD:
                continue

    async def _everything_due(self, chat_id: int, now: datetime, platform: str = "") -> _Batch:
        """Up to `MERGE_MAX` rows for one summary, read (and decoded) a page at a time, each page in a slice of
        its own (the caller holds a unit): a summary of thousands must not hold the loop for all of them."""
        await self.outbox.read_log(chat_id, want=MERGE_MAX, now=now, pace=self._next_chunk)
        batch = _Batch()
        after = 0
        while len(batch.ids) < MERGE_MAX:
            _, page = await self.outbox.due_for_chat(
                chat_id, now, limit=min(SUMMARY_PAGE, MERGE_MAX - len(batch.ids)), read=False, after_id=after
            )
            if not page:
                break
            after = page[-1].id
            page = await self._drop_expired(page, now, platform)
            batch.add(d for d in page if d.event is not None and d.edit_ref is None)
            await self._next_chunk()
        return batch

    def _plan(self, chat: Chat, platform: Platform, due: list[PendingDelivery]) -> batching.Plan:
        if not self.pacing:
            slots = len(due)
        else:
            horizon = batching.horizon_s(due, now=self.clock.now(), target_s=self.latency_target_s)
            pacer = self.pacers[platform.name]
            slots = pacer.slots_within(chat.id, group=chat.is_group, horizon_s=horizon, at_most=len(due))
        return batching.plan(due, slots=slots, page_full=len(due) >= PAGE)

    async def _drop_expired(
        self, due: list[PendingDelivery], now: datetime, platform: str = ""
    ) -> list[PendingDelivery]:
        """Rows past their expiry leave the outbox unsent, counted; the rest are returned in order."""
        stale = [d.id for d in due if d.expires_at is not None and d.expires_at <= now]
        if not stale:
            return due
        await self.outbox.expire(stale)
        self.stats.dropped["expired"] += len(stale)
        self.stats.outcomes[(platform, "expired")] += len(stale)
        log.info("alerts expired unsent chat=%d count=%d", due[0].chat_id, len(stale))
        return [d for d in due if d.id not in set(stale)]

    def _held_for(self, chat: Chat) -> float:
        """Seconds left of a platform hold on the chat (kept by its pacer, which every send passes)."""
        pacer = self.pacers.get(chat.platform)
        until = pacer.held_until(chat.id) if pacer is not None else None
        return 0.0 if until is None else until - self.clock.monotonic()

    async def _acquire(self, chat: Chat, platform: Platform) -> None:
        if self.pacing:
            await self.pacers[platform.name].acquire(chat.id, group=chat.is_group)

    # --- sending -------------------------------------------------------------------------------------
    async def _send_answers(self, chat: Chat, platform: Platform, answers: _Answers) -> _Outcome:
        """Everything answered since the last send goes out as one message (split to fit if long)."""
        queue = list(answers.queue)
        reply = queue[0][0] if len(queue) == 1 else _merge_replies([r for r, _ in queue])
        reply_to = queue[-1][1]
        await self._acquire(chat, platform)
        await self._my_turn()  # the pacer may have yielded: what follows is this slice's work too
        try:
            await platform.send(chat, reply, nonce=f"pwr{chat.id}-{answers.attempts}-{len(queue)}", reply_to=reply_to)
        except RetryLater as exc:
            self._rate_limited(platform, chat, exc.after_s)
            await self._hold(chat, exc.after_s, str(exc))
            return _Outcome.STOP
        except (TransientFailure, ChatMoved) as exc:
            answers.attempts += 1
            delay = half_jitter(self._backoff_s(answers.attempts), self._rand)
            log.warning("could not send an answer, will retry chat=%d delay_s=%.1f error=%s", chat.id, delay, exc)
            self.pacers[platform.name].hold(chat.id, self.clock.monotonic() + delay)
            self._timer(chat.id, delay)
            return _Outcome.STOP
        except Unauthorized as exc:
            self._disable(platform, exc)
            return _Outcome.STOP
        except PermanentFailure as exc:
            log.warning("answer refused, dropped platform=%s chat=%d reason=%s", platform.name, chat.id, exc)
        del answers.queue[: len(queue)]
        if not answers.queue:
            self._answers.pop(chat.id, None)
        self.stats.replies += len(queue)
        return _Outcome.NEXT

    async def _send(self, chat: Chat, platform: Platform, shape: batching.Shape, batch: _Batch) -> _Outcome:
        ids = batch.ids
        names = await self._names(chat, batch.events)
        try:
            alert = self._alert(shape, batch.events, names)
        except Exception as exc:  # a bug in a renderer must not block every later alert of the chat
            log.exception("cannot render alert chat=%d deliveries=%s", chat.id, ids)
            await self._park(chat, ids, f"cannot render: {type(exc).__name__}: {exc}", chat_gone=False)
            return _Outcome.NEXT
        await self._acquire(chat, platform)
        await self._my_turn()  # the pacer may have yielded: what follows is this slice's work too
        try:
            if shape is batching.Shape.EDIT and batch.edit_ref is not None:
                ref = await self._edit(chat, platform, MessageRef.load(batch.edit_ref), alert, ids)
            else:
                ref = await platform.send(chat, alert, nonce=_nonce(ids))
        except RetryLater as exc:
            self._rate_limited(platform, chat, exc.after_s)
            await self._hold(chat, exc.after_s, str(exc))
            return _Outcome.STOP
        except ChatMoved as exc:
            log.info("chat migrated platform=%s chat=%d new_id=%s", platform.name, chat.id, exc.new_chat_id)
            async with self._unit():
                await self.chats.migrate(chat.id, exc.new_chat_id)
            return _Outcome.RELOAD
        except Unauthorized as exc:
            self._disable(platform, exc)
            return _Outcome.STOP
        except PermanentFailure as exc:
            await self._park(chat, ids, str(exc), chat_gone=exc.chat_gone)
            return _Outcome.STOP if exc.chat_gone else _Outcome.NEXT
        except TransientFailure as exc:
            await self._retry(chat, batch, exc)
            return _Outcome.STOP
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("unexpected send error platform=%s chat=%d", platform.name, chat.id)
            await self._retry(chat, batch, TransientFailure(f"{type(exc).__name__}: {exc}"))
            return _Outcome.STOP
        self.stats.sent += 1
        if len(ids) > 1:
            self.stats.merged += len(ids)
        sent_at = self.clock.now()
        self.stats.outcomes[(platform.name, "sent")] += len(ids)
        for listener in self.sent_listeners:
            try:
                listener(platform.name, batch.events, sent_at)
            except Exception:  # a figure lost, never a send
                log.exception("a sent listener failed platform=%s", platform.name)
        self.outage.unrecorded[chat.id] = Unrecorded(ids=ids, message_ref=ref.dump(), sent_at=sent_at)
        if self.outage.paused():  # the database went away while this was in flight: one try per outage is enough
            return _Outcome.STOP
        async with self._unit():
            if self.outage.paused():  # it went away while this worker waited for its turn
                return _Outcome.STOP
            await self._record_unrecorded(chat.id)
        return _Outcome.NEXT

    async def _edit(self, chat: Chat, platform: Platform, ref: MessageRef, alert: Alert, ids: list[int]) -> MessageRef:
        try:
            edited = await platform.edit(chat, ref, alert)
        except MessageGone:
            log.info("message to update is gone, sending the revision anew chat=%d", chat.id)
            return await platform.send(chat, alert, nonce=_nonce(ids))
        self.stats.edited += 1
        return edited

    async def _names(self, chat: Chat, events: Sequence[Event]) -> Mapping[str, str] | None:
        """The chat's own labels of the wallets a whale alert names, so it reads `whale1`, not an address;
        the store away only costs the labels, never the send."""
        if not any(e.topic is Topic.WHALE for e in events):
            return None
        try:
            entries = await self.chats.watchlist(chat.id)
        except Exception:
            return None
        return {e.address: e.label for e in entries if e.label}

    def _alert(self, shape: batching.Shape, events: Sequence[Event], names: Mapping[str, str] | None = None) -> Alert:
        if shape in (batching.Shape.SINGLE, batching.Shape.EDIT) or len(events) == 1:
            return render_event(events[0], names=names)
        return render_summary(events, reason="digest" if shape is batching.Shape.DIGEST else "backlog")

    async def _record_unrecorded(self, chat_id: int) -> None:
        """Mark sent what the platform accepted for the chat. Until that succeeds nothing more is read for
        it: its rows are still pending, and reading them again would send the same alert twice."""
        recording = self._recording.get(chat_id)
        if recording is not None:  # another worker is recording it (PostgreSQL: its write really waits)
            await asyncio.shield(recording)
            return
        sent = self.outage.unrecorded.get(chat_id)
        if sent is None:
            return
        recording = self._recording[chat_id] = asyncio.get_running_loop().create_future()
        try:
            await self.outbox.mark_sent(sent.ids, message_ref=sent.message_ref, now=sent.sent_at)
        except BaseException as exc:
            recording.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            recording.exception()  # those waiting see it; nobody else must
            raise
        finally:
            if self._recording.get(chat_id) is recording:
                del self._recording[chat_id]
        if self.outage.unrecorded.get(chat_id) is sent:
            del self.outage.unrecorded[chat_id]
        recording.set_result(None)
        self.outage.ended()  # the database takes writes again: the outage is over

    async def _record_all_unrecorded(self) -> None:
        """Every chat's, at shutdown: the last try before what stays is sent again after the restart.

        A worker records only its own chat's before it reads: only that chat's worker reads its rows, and a
        chat migration (which moves the rows, with their ids, to another chat) happens in that worker, after
        it recorded. Recording every chat's there made one worker commit up to 256 other chats' sends in a
        step of its own (their own workers were about to), which held the loop 15-19 ms (bench/pipeline.py,
        due1 at 100,000 chats)."""
        for chat_id in list(self.outage.unrecorded):
            await self._record_unrecorded(chat_id)

    def _storage_fault(self, exc: StorageUnavailable, chat_id: int | None = None) -> None:
        self.stats.storage_faults += 1
        self.outage.fault(exc, chat_id)
        self._wake.set()  # the scheduler times the probe

    def _rate_limited(self, platform: Platform, chat: Chat, after_s: float) -> None:
        """Counted always; logged once per platform per `RATE_LIMIT_LOG_EVERY_S`, with how many came since."""
        self.stats.rate_limited += 1
        self.stats.rate_limited_by[platform.name] += 1
        self.stats.held_s_by[platform.name] += max(after_s, 0.0)
        mono = self.clock.monotonic()
        logged_at, since = self._rate_limits.get(platform.name, (float("-inf"), 0))
        if mono - logged_at < RATE_LIMIT_LOG_EVERY_S:
            self._rate_limits[platform.name] = (logged_at, since + 1)
            return
        self._rate_limits[platform.name] = (mono, 0)
        log.warning(
            "rate limited platform=%s chat=%d retry_after_s=%g more_since_last_line=%d",
            platform.name,
            chat.id,
            after_s,
            since,
        )

    def _disable(self, platform: Platform, exc: Unauthorized) -> None:
        """The token was refused: nothing more is tried on this platform; its deliveries stay pending."""
        if platform.name not in self.disabled:
            self.disabled[platform.name] = str(exc)
            log.error("platform sending stopped platform=%s reason=%s", platform.name, exc)

    async def _hold(self, chat: Chat, after_s: float, reason: str) -> None:
        """A 429 or a retry back-off: nothing goes to the chat before it ends, alerts and answers alike."""
        self.pacers[chat.platform].hold(chat.id, self.clock.monotonic() + after_s)
        until = self.clock.now() + timedelta(seconds=after_s)
        async with self._unit():  # like a send's record, a turn in the loop's slices: 429s come in floods
            await self.outbox.hold_chat(chat.id, until=until, error=reason)
        self._timer(chat.id, after_s)

    async def _retry(self, chat: Chat, batch: _Batch, exc: TransientFailure) -> None:
        attempts = batch.attempts + 1
        delay = half_jitter(self._backoff_s(attempts), self._rand)
        self.stats.retried += 1
        doubt = " (the platform may have shown it: the retry can show it twice)" if exc.maybe_delivered else ""
        log.warning(
            "send failed, will retry%s chat=%d attempt=%d delay_s=%.1f error=%s", doubt, chat.id, attempts, delay, exc
        )
        until = self.clock.now() + timedelta(seconds=delay)
        async with self._unit():
            await self.outbox.reschedule(batch.ids, at=until, error=str(exc), count_attempt=True)
        await self._hold(chat, delay, str(exc))  # the whole chat waits, so its alerts stay in order

    def _backoff_s(self, attempts: int) -> float:
        return float(min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempts - 1)))

    async def _park(self, chat: Chat, ids: list[int], reason: str, *, chat_gone: bool) -> None:
        if chat_gone:
            async with self._unit():  # a banned bot hears 403 from every chat at once
                parked = await self.chats.mark_gone(chat.id, reason)
            self.stats.parked += parked
            self.stats.outcomes[(chat.platform, "parked")] += parked
            self._answers.pop(chat.id, None)
            if chat.id not in self._gone_logged:  # tell the operator log once per chat, not per alert
                self._gone_logged.add(chat.id)
                log.warning(
                    "chat unreachable, alerts parked platform=%s chat=%d parked=%d reason=%s",
                    chat.platform,
                    chat.id,
                    parked,
                    reason,
                )
        else:
            async with self._unit():
                await self.outbox.park(ids, reason=reason)
            self.stats.parked += len(ids)
            self.stats.outcomes[(chat.platform, "parked")] += len(ids)
            log.warning("alert rejected, parked platform=%s chat=%d reason=%s", chat.platform, chat.id, reason)


def _nonce(ids: Sequence[int]) -> str:
    """Stable for one set of rows across retries and restarts; a different merge gets a different nonce."""
    return f"pw{ids[0]}" if len(ids) == 1 else f"pw{ids[0]}-{ids[-1]}-{len(ids)}"


def _merge_replies(replies: Sequence[Reply]) -> Message:
    lines: list[str] = []
    for reply in replies:
        if lines:
            lines.append("")
        if reply.title:
            lines.append(reply.title)
        lines.extend(reply.lines)
    return Reply(lines=tuple(lines), ok=all(r.ok for r in replies))
