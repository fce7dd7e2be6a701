"""Who may hear of an event: the dispatcher's in-memory index of every subscription, so waking the chats an
accepted event concerns costs a few dictionary lookups, not a query and not a row per chat.

A chat is awake from the event that woke it until its worker reads the log (`sleep`); an event only
looks at the chats asleep under its keys, grouped by their minimum, so it costs what the chats it newly
wakes cost. In a flood nearly every chat is awake already, and an event costs a handful of lookups
whether 1,000 or 100,000 chats hear of it.

The index errs only one way: it may wake a chat that turns out to hear nothing (its read of the log finds
no match and moves its cursor on), never miss one that does. The outbox's matching in SQL stays the truth.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
from collections.abc import Iterable, Iterator

from perpwatch.events import Event
from perpwatch.symbols import base_asset
from storage import ChatRepo
from storage.models import Interest, to_cents

LOAD_PAGE = 200
"""Chats read per query while loading: each page is a short statement and its indexing, with a turn for
others between. The load runs at start and after an outage, while the first sends go out and the CPU is
shared, so a page is sized for a busy machine (500 held the loop past 15 ms there, bench/pipeline.py
due1-429 with --profile)."""

_Key = tuple[str, str, str]
"""(topic, venue or '*', symbol or base asset or '*'), or ("@" + topic, address, "") for a watch list."""


class _Bucket:
    """The chats under one key, asleep ones grouped by minimum (users pick a few round figures)."""

    __slots__ = ("alone", "asleep", "key", "levels", "members")

    def __init__(self, key: _Key) -> None:
        self.key = key
        """The one copy of its key every chat under it shares (a copy of the row's strings per chat cost
        about 20 MiB at 100,000 chats, the tuples 10 MiB more)."""
        self.alone: tuple[_Key, ...] = (key,)
        """The keys of a chat under this key alone, shared by all such chats."""
        self.members: dict[int, int] = {}
        self.levels: list[int] = []
        self.asleep: dict[int, set[int]] = {}

    def add(self, chat_id: int, min_cents: int) -> None:
        self.members[chat_id] = min(min_cents, self.members.get(chat_id, min_cents))
        level = self.members[chat_id]
        if level not in self.asleep:
            bisect.insort(self.levels, level)
            self.asleep[level] = set()
        self.asleep[level].add(chat_id)

    def remove(self, chat_id: int) -> None:
        level = self.members.pop(chat_id, None)
        if level is not None:
            self.asleep[level].discard(chat_id)

    def wake(self, cents: int | None, into: set[int]) -> None:
        top = len(self.levels) if cents is None else bisect.bisect_right(self.levels, cents)
        for level in self.levels[:top]:
            asleep = self.asleep[level]
            if asleep:
                into |= asleep
                asleep.clear()

    def sleep(self, chat_id: int) -> None:
        level = self.members.get(chat_id)
        if level is not None:
            self.asleep[level].add(chat_id)

    def stir(self, chat_id: int) -> None:
        level = self.members.get(chat_id)
        if level is not None:
            self.asleep[level].discard(chat_id)


class _KeysByChat:
    """Each chat's keys, in blocks of consecutive chat ids: one dict of every chat grew by rehashing all of
    them in one step, the longest step of the index's load at 100,000 chats (bench/pipeline.py due1).
    Ids are handed out in order, so blocks fill densely and none is ever large."""

    __slots__ = ("_blocks",)
    _SHIFT = 10

    def __init__(self) -> None:
        self._blocks: dict[int, dict[int, tuple[_Key, ...]]] = {}

    def get(self, chat_id: int) -> tuple[_Key, ...]:
        block = self._blocks.get(chat_id >> self._SHIFT)
        return block.get(chat_id, ()) if block is not None else ()

    def set(self, chat_id: int, keys: tuple[_Key, ...]) -> None:
        block = self._blocks.get(chat_id >> self._SHIFT)
        if block is None:
            block = self._blocks[chat_id >> self._SHIFT] = {}
        block[chat_id] = keys

    def pop(self, chat_id: int) -> tuple[_Key, ...]:
        block = self._blocks.get(chat_id >> self._SHIFT)
        return block.pop(chat_id, ()) if block is not None else ()


class InterestIndex:
    def __init__(self, chats: ChatRepo) -> None:
        self.chats = chats
        self._buckets: dict[_Key, _Bucket] = {}
        self._keys = _KeysByChat()
        """Each chat's keys: a tuple, as most chats have one or two (a set per chat cost ~17 MiB at 100,000)."""
        self._several: set[int] = set()
        """Chats under more than one key: only they need waking under their other keys too."""
        self.loaded = False

    async def load(self) -> None:
        """Every active chat's subscriptions, a page at a time, into an index built anew (every chat asleep)."""
        self.loaded = False
        self._buckets = {}
        self._keys = _KeysByChat()
        self._several = set()
        after = 0
        with _collector_paused():
            while True:
                page = await self.chats.interests(after_chat=after, limit=LOAD_PAGE)
                if not page:
                    break
                for interest in page:
                    self._add(interest)
                after = page[-1].chat_id
                await asyncio.sleep(0)
            _freeze_long_lived()
        self.loaded = True

    async def fetch(self, chat_id: int) -> list[Interest]:
        """The chat's subscriptions as stored now (its thresholds and watch list folded in)."""
        return await self.chats.interests(after_chat=0, limit=1, chat_id=chat_id)

    def replace(self, chat_id: int, fresh: Iterable[Interest]) -> None:
        """Index the chat anew (asleep) from what `fetch` returned."""
        for key in self._keys.pop(chat_id):
            self._buckets[key].remove(chat_id)
        self._several.discard(chat_id)
        for interest in fresh:
            self._add(interest)

    def _add(self, interest: Interest) -> None:
        if interest.scope == "all":
            keys: Iterable[_Key] = ((interest.topic, interest.venue, interest.symbol),)
        else:  # the venue, symbol and minimum of a watch-list subscription are left to the outbox
            keys = [("@" + interest.topic, address, "") for address in interest.addresses]
        mine = self._keys.get(interest.chat_id)
        for key in keys:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(key)
            bucket.add(interest.chat_id, interest.min_cents if interest.scope == "all" else 0)
            if bucket.key not in mine:
                mine = bucket.alone if not mine else (*mine, bucket.key)
        self._keys.set(interest.chat_id, mine)
        if len(mine) > 1:
            self._several.add(interest.chat_id)

    def wake(self, event: Event) -> set[int]:
        """The chats asleep that may hear of the event (a superset of those that do), now awake."""
        woken: set[int] = set()
        topic = event.topic.value
        cents = to_cents(event.usd) if event.usd is not None else None
        venues = ("*",) if event.venue is None else ("*", event.venue.value)
        symbols: Iterable[str] = ("*",)
        if event.symbol:
            symbols = {"*", event.symbol.upper(), base_asset(event.symbol)}
        for venue in venues:
            for symbol in symbols:
                bucket = self._buckets.get((topic, venue, symbol))
                if bucket is not None:
                    bucket.wake(cents, woken)
        if event.subject is not None:
            watched = self._buckets.get(("@" + topic, event.subject, ""))
            if watched is not None:
                watched.wake(None, woken)
        for chat_id in woken & self._several:  # awake under its other keys too
            for key in self._keys.get(chat_id):
                self._buckets[key].stir(chat_id)
        return woken

    def sleep(self, chat_id: int) -> None:
        """The chat's worker is reading the log: the next event it may hear of wakes it again."""
        for key in self._keys.get(chat_id):
            self._buckets[key].sleep(chat_id)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The load makes a few objects per chat and keeps them all: each full collection it set off walked every
    one made so far and held the loop 35-55 ms (bench/pipeline.py due1 at 100,000 chats). They are frozen as
    it ends, so those collections would have found nothing; reference counting still frees what the load
    drops."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _freeze_long_lived() -> None:
    """What exists once the index is loaded (modules, models, the index itself) lives as long as the process:
    move it out of the cyclic collector's sight (`gc.freeze`), once. Each full collection otherwise walked
    all of it and held the loop 55-85 ms (bench/pipeline.py due1 at 100,000 chats: 27 of them in a drain,
    every one over 25 ms); after the freeze a full collection walks what was made since (5-15 ms)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


_frozen = False
