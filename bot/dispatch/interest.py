"""Who may hear of an event: the dispatcher's in-memory index of every subscription, so waking the chats
an accepted event concerns costs a few dictionary lookups, not a query and not a row per chat.

The index errs only one way: it may wake a chat that turns out to hear nothing (its read of the log finds
no match and moves its cursor on), never miss one that does. The outbox's matching in SQL stays the truth.
It also tells how far a chat may skip the log: once the dispatcher has seen a chat read to the head, every
later event was shown to the index, so the events before the first one it matched are of no interest to
that chat and its next read starts there instead of walking them.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import defaultdict
from collections.abc import Iterable

from perpwatch.events import Event
from perpwatch.symbols import base_asset
from storage import ChatRepo
from storage.models import Interest, to_cents

LOAD_PAGE = 2000
"""Chats read per query while loading: each page is a short statement, with a turn for others between."""

_Key = tuple[str, str, str]


class _Bucket:
    """The chats under one key, by their minimum in cents: an event wakes a prefix of them."""

    __slots__ = ("chats", "mins")

    def __init__(self) -> None:
        self.mins: list[int] = []
        self.chats: list[int] = []

    def add(self, min_cents: int, chat_id: int) -> None:
        at = bisect.bisect_right(self.mins, min_cents)
        self.mins.insert(at, min_cents)
        self.chats.insert(at, chat_id)

    def remove(self, chat_id: int) -> None:
        while chat_id in self.chats:
            at = self.chats.index(chat_id)
            del self.chats[at]
            del self.mins[at]

    def upto(self, cents: int | None) -> list[int]:
        return self.chats if cents is None else self.chats[: bisect.bisect_right(self.mins, cents)]


class InterestIndex:
    def __init__(self, chats: ChatRepo) -> None:
        self.chats = chats
        self._all: dict[_Key, _Bucket] = defaultdict(_Bucket)
        """(topic, venue or '*', symbol or base or '*') of subscriptions that hear every matching event."""
        self._watched: dict[tuple[str, str], set[int]] = defaultdict(set)
        """(topic, address) of subscriptions scoped to the watch list (filters past these are left to SQL)."""
        self._keys: dict[int, list[tuple[str, object]]] = defaultdict(list)
        self.loaded = False

    async def load(self) -> None:
        """Every active chat's subscriptions, a page at a time."""
        after = 0
        while True:
            page = await self.chats.interests(after_chat=after, limit=LOAD_PAGE)
            if not page:
                break
            for interest in page:
                self._add(interest)
            after = page[-1].chat_id
            await asyncio.sleep(0)
        self.loaded = True

    async def refresh(self, chat_id: int) -> None:
        """The chat's subscriptions, thresholds, watch list or status changed: index it anew."""
        fresh = await self.chats.interests(after_chat=0, limit=1, chat_id=chat_id)
        self._drop(chat_id)
        for interest in fresh:
            self._add(interest)

    def _add(self, interest: Interest) -> None:
        keys = self._keys[interest.chat_id]
        if interest.scope == "all":
            key = (interest.topic, interest.venue, interest.symbol)
            self._all[key].add(interest.min_cents, interest.chat_id)
            keys.append(("all", key))
        else:
            for address in interest.addresses:
                watched = (interest.topic, address)
                self._watched[watched].add(interest.chat_id)
                keys.append(("watched", watched))

    def _drop(self, chat_id: int) -> None:
        for kind, key in self._keys.pop(chat_id, []):
            if kind == "all":
                bucket = self._all.get(key)  # type: ignore[call-overload]
                if bucket is not None:
                    bucket.remove(chat_id)
            else:
                self._watched[key].discard(chat_id)  # type: ignore[index]

    def match(self, event: Event) -> set[int]:
        """The chats that may hear of the event (a superset of those that do)."""
        chats: set[int] = set()
        topic = event.topic.value
        cents = to_cents(event.usd) if event.usd is not None else None
        venues = ("*",) if event.venue is None else ("*", event.venue.value)
        symbols: Iterable[str] = ("*",)
        if event.symbol:
            symbols = {"*", event.symbol.upper(), base_asset(event.symbol)}
        for venue in venues:
            for symbol in symbols:
                bucket = self._all.get((topic, venue, symbol))
                if bucket is not None:
                    chats.update(bucket.upto(cents))
        if event.subject is not None:
            chats.update(self._watched.get((topic, event.subject), ()))
        return chats
