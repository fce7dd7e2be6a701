"""Drains the outbox to the platforms: pacing, retries, parking, merging, quiet hours, restart resume.

Each chat with due deliveries gets one worker task that sends its alerts in order, so per-chat order holds
and one slow or rate-limited chat never stalls another. A delivery row leaves 'pending' only after the
platform accepted the message, so a crash at any point re-sends at most the one message in flight (and,
while the database cannot be written, the one message per chat it could not yet record), and a restart
simply finds the rows still pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TypeVar

from aiolimiter import AsyncLimiter

from bot.platforms.base import (
    ChatMoved,
    PermanentFailure,
    Platform,
    Rate,
    RetryLater,
    TransientFailure,
)
from bot.quiet import QUIET_HOLD, QuietHours
from bot.families import render_event, render_summary
from bot.render import Alert
from storage import ChatRepo, Outbox, StorageUnavailable
from storage.models import Chat, PendingDelivery

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_K = TypeVar("_K")
_MERGE_MAX = 5000
"""Most rows merged into one summary or digest; a larger backlog becomes several, still nothing dropped."""
_PAGE = 101
"""Rows a worker reads at once: more than any platform sends a chat in a minute, so a backlog beyond a
minute's worth is always seen whole enough to merge."""
_STORAGE_PAUSES_S = (1.0, 2.0, 5.0, 15.0, 30.0)
"""How long all sending stops after the outbox failed to read or write, growing while the fault lasts: a
message sent then could not be recorded, and each try stops the loop for the database's lock wait."""
_STORAGE_FAULT_MEMORY_S = 60.0
"""A fault this long after the last pause ended starts a new outage, with the shortest pause again."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Unrecorded:
    """A message the platform accepted whose delivery rows the outbox could not yet mark sent."""

    ids: list[int]
    message_id: str | None
    sent_at: datetime


@dataclass
class DispatchStats:
    sent: int = 0
    merged: int = 0
    retried: int = 0
    parked: int = 0
    rate_limited: int = 0
    storage_faults: int = 0


class Dispatcher:
    """Sends what the pipeline accepted. `notify()` wakes it at once; otherwise it wakes when rows fall due."""

    def __init__(
        self,
        outbox: Outbox,
        chats: ChatRepo,
        platforms: Sequence[Platform],
        *,
        clock: Clock = utcnow,
        pacing: bool = True,
        backoff_initial_s: float = 2.0,
        backoff_max_s: float = 600.0,
        max_workers: int = 256,
        idle_poll_s: float = 5.0,
    ) -> None:
        self.outbox = outbox
        self.chats = chats
        self.platforms = {p.name: p for p in platforms}
        self.clock = clock
        self.pacing = pacing
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.idle_poll_s = idle_poll_s
        self.stats = DispatchStats()
        self._wake = asyncio.Event()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max_workers)
        self._chat_limiters: dict[int, AsyncLimiter] = {}
        self._group_limiters: dict[int, AsyncLimiter] = {}
        self._overall: dict[str, AsyncLimiter] = {}
        self._gone_logged: set[int] = set()
        self._dirty: set[int] = set()
        self._stopping = False
        self._unrecorded: dict[int, _Unrecorded] = {}
        self._storage_faults = 0
        self._paused_until = 0.0

    def notify(self, chat_ids: Iterable[int] = ()) -> None:
        """New deliveries were committed for these chats: start their workers now, no query needed.

        A chat whose worker is busy is marked dirty so the worker reads again before it stops. With no ids,
        wake the scheduler to look at the whole outbox.
        """
        ids = list(chat_ids)
        if self._stopping:
            return
        if not ids:
            self._wake.set()
        for chat_id in ids:
            if chat_id in self._workers:
                self._dirty.add(chat_id)
            else:
                self._start_worker(chat_id)

    def _start_worker(self, chat_id: int) -> None:
        task = asyncio.create_task(self._drain(chat_id), name=f"dispatch:chat:{chat_id}")
        self._workers[chat_id] = task
        task.add_done_callback(functools.partial(self._worker_done, chat_id))

    async def run(self) -> None:
        """Until cancelled: start a worker for each chat with due rows, then sleep until more fall due."""
        names = list(self.platforms)
        try:
            while True:
                self._wake.clear()
                now = self.clock()
                next_due: datetime | None = None
                try:
                    pending = await self.outbox.pending_chats(platforms=names)
                except StorageUnavailable as exc:
                    self._storage_fault(exc)
                    pending = []
                except Exception:  # a bug must not stop every chat's alerts; look again after the idle poll
                    log.exception("dispatch scheduler failed")
                    pending = []
                for chat_id, due_at in pending:
                    if due_at > now:
                        next_due = due_at if next_due is None else min(next_due, due_at)
                    elif chat_id not in self._workers:
                        self._start_worker(chat_id)
                timeout = self.idle_poll_s
                pause_left = self._paused_until - asyncio.get_running_loop().time()
                if pause_left > 0:
                    timeout = min(timeout, pause_left)
                if next_due is not None:
                    timeout = min(timeout, (next_due - now).total_seconds())
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as the
                # event is set, which left stop() waiting forever for this task (seen in the test suite).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            await self._shut_down()

    async def _shut_down(self, grace_s: float = 5.0) -> None:
        """Let each worker finish the send in flight (and record it), then cancel what is left.

        Cancelling a send mid-flight would re-send, after the restart, a message the platform may already
        have delivered; workers stop before their next send once `_stopping` is set.
        """
        self._stopping = True
        workers = list(self._workers.values())
        if workers:
            await asyncio.wait(workers, timeout=grace_s)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        with contextlib.suppress(StorageUnavailable):  # one last try; what stays is sent again after restart
            await self._record_all_unrecorded()
        if self._unrecorded:
            log.error("stopping with sent alerts not recorded, they will be sent again chats=%d", len(self._unrecorded))

    def _worker_done(self, chat_id: int, _task: asyncio.Task[None]) -> None:
        self._workers.pop(chat_id, None)
        if chat_id in self._dirty and not self._stopping:  # new rows arrived as the worker was finishing: go again
            self._dirty.discard(chat_id)
            self._start_worker(chat_id)

    async def idle(self) -> bool:
        """True when nothing is being sent and nothing is due: for tests and the demo's exit."""
        now = self.clock()
        pending = await self.outbox.pending_chats(platforms=list(self.platforms))
        return not self._workers and all(due_at > now for _, due_at in pending)

    # --- one chat ---------------------------------------------------------------------------------
    async def _drain(self, chat_id: int) -> None:
        async with self._slots:
            try:
                await self._drain_chat(chat_id)
            except asyncio.CancelledError:
                raise
            except StorageUnavailable as exc:  # the scheduler starts the chat again when the pause ends
                self._storage_fault(exc, chat_id)
            except Exception:
                # A bug must not kill the dispatcher; the rows stay pending and are tried again.
                log.exception("dispatch worker failed chat=%d", chat_id)
                await asyncio.sleep(1.0)

    async def _drain_chat(self, chat_id: int) -> None:
        """Send the chat's due rows in order until none are left; stop early on a hold, retry or park."""
        while True:
            if self._paused():
                return  # the rows stay pending; the scheduler wakes when the pause ends
            await self._record_all_unrecorded()  # before anything is read, or it would be sent again
            self._dirty.discard(chat_id)
            now = self.clock()
            chat, due = await self.outbox.due_for_chat(chat_id, now, limit=_PAGE)
            if chat is None:
                return
            platform = self.platforms.get(chat.platform)
            if platform is None:  # e.g. its token was removed: the rows wait for the platform to return
                return
            quiet = QuietHours.of(chat)
            if quiet is not None and quiet.active(now):
                until = quiet.ends_after(now)
                await self._hold(chat_id, until, QUIET_HOLD, quiet=True)
                log.info("holding alerts for quiet hours chat=%d until=%s", chat_id, until.isoformat())
                return
            merge_above = platform.limits.per_minute(group=chat.is_group) if self.pacing else float("inf")
            if any(d.quiet_held for d in due):
                _, due = await self.outbox.due_for_chat(chat_id, now, limit=_MERGE_MAX)
                batches = [due]  # one digest for everything held through the quiet hours
            elif len(due) > merge_above:
                _, due = await self.outbox.due_for_chat(chat_id, now, limit=_MERGE_MAX)
                batches = _by_topic(due)
            else:
                batches = [[d] for d in due]  # in order, one message each; read again only after these
            for batch in batches:
                if self._stopping:
                    return
                outcome = await self._send(chat, platform, batch)
                if outcome is _Outcome.STOP:
                    return
                if outcome is _Outcome.RELOAD:
                    self._dirty.add(chat_id)
                    break
            if len(due) < _PAGE and chat_id not in self._dirty:
                return  # everything that was due is sent, and nothing arrived meanwhile

    async def _send(self, chat: Chat, platform: Platform, batch: list[PendingDelivery]) -> _Outcome:
        ids = [d.id for d in batch]
        try:
            alert = self._alert(batch, chat)
        except Exception as exc:  # a bug in a renderer must not block every later alert of the chat
            log.exception("cannot render alert chat=%d deliveries=%s", chat.id, ids)
            await self._park(chat, ids, f"cannot render: {type(exc).__name__}: {exc}", chat_gone=False)
            return _Outcome.NEXT
        await self._pace(chat, platform)
        try:
            message_id = await platform.send(chat, alert)
        except RetryLater as exc:
            self.stats.rate_limited += 1
            until = self.clock() + timedelta(seconds=exc.after_s)
            log.warning("rate limited platform=%s chat=%d retry_after_s=%g", platform.name, chat.id, exc.after_s)
            await self._hold(chat.id, until, str(exc))
            return _Outcome.STOP
        except ChatMoved as exc:
            log.info("chat migrated platform=%s chat=%d new_id=%s", platform.name, chat.id, exc.new_chat_id)
            await self.chats.migrate(chat.id, exc.new_chat_id)
            return _Outcome.RELOAD
        except PermanentFailure as exc:
            await self._park(chat, ids, str(exc), chat_gone=exc.chat_gone)
            return _Outcome.STOP if exc.chat_gone else _Outcome.NEXT
        except TransientFailure as exc:
            await self._retry(chat, batch, str(exc))
            return _Outcome.STOP
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("unexpected send error platform=%s chat=%d", platform.name, chat.id)
            await self._retry(chat, batch, f"{type(exc).__name__}: {exc}")
            return _Outcome.STOP
        self.stats.sent += 1
        if len(ids) > 1:
            self.stats.merged += len(ids)
        self._unrecorded[chat.id] = _Unrecorded(ids=ids, message_id=message_id, sent_at=self.clock())
        if self._paused():  # the database went away while this was in flight: one try per pause is enough
            return _Outcome.STOP
        await self._record_unrecorded(chat.id)
        return _Outcome.NEXT

    async def _record_unrecorded(self, chat_id: int) -> None:
        """Mark sent what the platform accepted for the chat. Until that succeeds nothing more is read for
        it: its rows are still pending, and reading them again would send the same alert twice."""
        sent = self._unrecorded.get(chat_id)
        if sent is None:
            return
        await self.outbox.mark_sent(sent.ids, message_id=sent.message_id, now=sent.sent_at)
        del self._unrecorded[chat_id]
        self._storage_faults = 0  # the database takes writes again: the outage is over

    async def _record_all_unrecorded(self) -> None:
        """Every chat's, not only the worker's own: a chat migration moves a chat's pending rows (with their
        ids) to another chat, whose worker must not read them before they are recorded."""
        for chat_id in list(self._unrecorded):
            await self._record_unrecorded(chat_id)

    def _paused(self) -> bool:
        return asyncio.get_running_loop().time() < self._paused_until

    def _storage_fault(self, exc: StorageUnavailable, chat_id: int | None = None) -> None:
        """Stop all sending for a while: a write fails for every chat alike, and each try stops the loop.

        Sends in flight when the database went away are kept unrecorded without a try of their own, so
        each pause ends in one try, and the pause grows only when that try fails too.
        """
        self.stats.storage_faults += 1
        if chat_id is not None:
            self._wake.set()  # the scheduler sets its timer for the pause's end and tries the chat again then
        if self._paused():
            return
        if asyncio.get_running_loop().time() - self._paused_until > _STORAGE_FAULT_MEMORY_S:
            self._storage_faults = 0
        pause_s = _STORAGE_PAUSES_S[min(self._storage_faults, len(_STORAGE_PAUSES_S) - 1)]
        self._storage_faults += 1
        self._paused_until = asyncio.get_running_loop().time() + pause_s
        log.log(
            logging.WARNING if self._storage_faults <= 3 else logging.ERROR,
            "storage unavailable, sending paused chat=%s faults=%d pause_s=%g unrecorded=%d error=%s",
            chat_id,
            self._storage_faults,
            pause_s,
            len(self._unrecorded),
            exc,
        )

    async def _hold(self, chat_id: int, until: datetime, reason: str, *, quiet: bool = False) -> None:
        await self.outbox.hold_chat(chat_id, until=until, error=reason, quiet=quiet)
        self._wake.set()  # the scheduler sets its timer for `until`

    def _alert(self, batch: list[PendingDelivery], chat: Chat) -> Alert:
        if len(batch) == 1:
            return render_event(batch[0].event)
        digest = any(d.quiet_held for d in batch)
        return render_summary([d.event for d in batch], reason="digest" if digest else "backlog")

    async def _retry(self, chat: Chat, batch: list[PendingDelivery], error: str) -> None:
        attempts = max(d.attempts for d in batch) + 1
        delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempts - 1))
        delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not crypto
        self.stats.retried += 1
        log.warning(
            "send failed, will retry chat=%d attempt=%d delay_s=%.1f error=%s",
            chat.id,
            attempts,
            delay,
            error,
        )
        until = self.clock() + timedelta(seconds=delay)
        await self.outbox.reschedule([d.id for d in batch], at=until, error=error, count_attempt=True)
        await self._hold(chat.id, until, error)  # the whole chat waits, so its alerts stay in order

    async def _park(self, chat: Chat, ids: list[int], reason: str, *, chat_gone: bool) -> None:
        if chat_gone:
            parked = await self.chats.mark_gone(chat.id, reason)
            self.stats.parked += parked
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
            await self.outbox.park(ids, reason=reason)
            self.stats.parked += len(ids)
            log.warning("alert rejected, parked platform=%s chat=%d reason=%s", chat.platform, chat.id, reason)

    # --- pacing -----------------------------------------------------------------------------------
    async def _pace(self, chat: Chat, platform: Platform) -> None:
        if not self.pacing:
            return
        limits = platform.limits
        if limits.overall:
            await self._limiter(self._overall, platform.name, limits.overall).acquire()
        if limits.per_group and chat.is_group:
            await self._limiter(self._group_limiters, chat.id, limits.per_group).acquire()
        if limits.per_chat:
            await self._limiter(self._chat_limiters, chat.id, limits.per_chat).acquire()

    @staticmethod
    def _limiter(table: dict[_K, AsyncLimiter], key: _K, rate: Rate) -> AsyncLimiter:
        limiter = table.get(key)
        if limiter is None:
            limiter = table[key] = AsyncLimiter(rate.count, rate.period_s)
        return limiter


class _Outcome(Enum):
    """What the chat worker does after one send."""

    NEXT = "next"
    STOP = "stop"
    RELOAD = "reload"


def _by_topic(due: list[PendingDelivery]) -> list[list[PendingDelivery]]:
    groups: dict[str, list[PendingDelivery]] = defaultdict(list)
    for delivery in due:
        groups[delivery.event.topic.value].append(delivery)
    return list(groups.values())
