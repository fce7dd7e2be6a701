"""Reference data: what a stream needs before its frames make sense (symbols to subscribe, id→symbol maps,
contract values), fetched at start, refreshed while running, and kept as a last good copy.

A venue module declares a `RefSource`: the request (or a `fetch` for several: pages, one per dex), and a
pure `parse(body) -> T` tested on recorded payloads, plus `keys(T)`, the names a stream subscribes to or
a parser looks up. The runtime turns it into one shared `ReferenceData[T]` per name.

Last good copy: what is stored is the raw decoded *body* that parsed, not `T`, so there is one encoding
(JSON, decimals exact) and a stored copy goes through the same `parse` as a live one. At start the stored
copy is loaded before the first request: a venue whose REST is down at start still streams on what it
knew. A body that fails to parse (the venue changed its format) never replaces the copy, and neither does
one with no keys at all unless the source allows it: an empty symbol list from a glitching endpoint would
otherwise unsubscribe every stream.

Unknown keys: a parser that meets a symbol the data does not know asks `require(key)`. The frame's event
is *refused*, counted under `unknown_symbol`, and a refresh is asked for (at most one in flight, never
sooner than `min_refresh_s` after the last). It is not held until the refresh answers: the handler is pure
and synchronous, and holding would mean either stalling the socket behind a REST call that may be down for
minutes or a second, buffered delivery path with its own bounds and ordering. The gap is one refresh long,
right after a listing when a market has little open interest to liquidate, and every refused event shows
in `/status` under its reason instead of being guessed (an OKX contract value is not 1 because we hoped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, cast

from perpwatch.clock import SYSTEM_CLOCK, Clock
from watchers.base import WatcherHealth, describe
from watchers.poller import BudgetRegistry, PollTuning, Request, RestPoller, SessionSource
from watchers.validate import Refused

logger = logging.getLogger(__name__)

T = TypeVar("T")

UNKNOWN_SYMBOL = "unknown_symbol"
"""The reason `/status` counts events refused because the reference data did not know their symbol yet."""

Fetch = Callable[[Request], Awaitable[Any]]
"""Makes one budgeted request and returns its decoded body; what a multi-request `fetch` is given."""


class StateStore(Protocol):
    """Where the last good copy lives: a watcher's durable state (`watchers.runtime.DurableState`)."""

    async def get(self, key: str) -> Any | None: ...

    async def put(self, key: str, value: Any) -> None: ...


class UnknownKey(Refused):
    """A frame names a key (symbol, market id, instrument) the reference data does not hold yet."""

    def __init__(self, dataset: str, key: str) -> None:
        super().__init__(UNKNOWN_SYMBOL, f"{key!r} is not in {dataset} yet; a refresh was asked for")
        self.dataset = dataset
        self.key = key


@dataclass(frozen=True, slots=True)
class Change:
    """What a refresh changed in the keys; listeners get it with the new value."""

    added: frozenset[str]
    removed: frozenset[str]


@dataclass(frozen=True)
class RefSource(Generic[T]):
    """A venue's dataset. Give `request` for a single call, or `fetch` to make several (it gets a budgeted
    `Fetch` and returns one JSON-able body, e.g. the list of pages). `name` is also its storage key, so
    keep it stable across releases ("bybit.linear.instruments")."""

    name: str
    parse: Callable[[Any], T]
    keys: Callable[[T], Iterable[str]]
    request: Request | None = None
    fetch: Callable[[Fetch], Awaitable[Any]] | None = None
    refresh_s: float = 3600.0
    min_refresh_s: float = 60.0
    allow_empty: bool = False

    def __post_init__(self) -> None:
        if (self.request is None) == (self.fetch is None):
            raise ValueError(f"{self.name}: give exactly one of request and fetch")


Listener = Callable[[T, Change], None]


class ReferenceData(RestPoller, Generic[T]):
    """One dataset, shared by every watcher that reads it; `value` is the last good `T` (None before any).

    `ready()` waits for a first value (stored or live). `listen(fn)` calls `fn(value, change)` whenever the
    keys change (a stream pool rebalances on it); a listener's error is logged and never stops the others.
    `use()` runs the refresh loop for as long as any user holds it, so two watchers of one venue share one
    poll. `origin` says where the value came from ("stored" or "live") and `fetched_at` when it was fetched.
    """

    def __init__(
        self,
        source: RefSource[T],
        *,
        state: StateStore,
        budgets: BudgetRegistry,
        session: SessionSource | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        retry_initial_s: float = 5.0,
    ) -> None:
        tuning = PollTuning(
            interval_s=source.refresh_s,
            retry_initial_s=min(retry_initial_s, source.refresh_s),
            min_refresh_s=source.min_refresh_s,
        )
        super().__init__(
            f"refdata {source.name}",
            tuning,
            budgets=budgets,
            session=session,
            clock=clock,
            rand=rand,
            health=WatcherHealth(name=f"refdata {source.name}", clock=clock),
        )
        self.source = source
        self.state = state
        self.value: T | None = None
        self.keys: frozenset[str] = frozenset()
        self.origin: str | None = None
        self.fetched_at: datetime | None = None
        self._listeners: list[Listener[T]] = []
        self._ready = asyncio.Event()
        self._users = 0
        self._task: asyncio.Task[None] | None = None

    # --- what watchers call -------------------------------------------------------------------------
    async def ready(self) -> T:
        await self._ready.wait()
        assert self.value is not None
        return self.value

    def listen(self, listener: Listener[T]) -> Callable[[], None]:
        """Registers `listener`; returns the call that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def known(self, key: str) -> bool:
        """Whether `key` is held; when not, a refresh is asked for (rate limited) before returning False."""
        if key in self.keys:
            return True
        asked = self.refresh_soon()
        logger.debug("unknown key dataset=%s key=%.60r refresh_asked=%s", self.source.name, key, asked)
        return False

    def require(self, key: str) -> None:
        """For a parser: raises `UnknownKey` (a refusal counted under `unknown_symbol`) for a key not held."""
        if not self.known(key):
            raise UnknownKey(self.source.name, key)

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[ReferenceData[T]]:
        """Keeps the refresh loop running while held; the last user out stops it."""
        self._users += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"refdata:{self.source.name}")
        try:
            yield self
        finally:
            self._users -= 1
            if self._users == 0 and self._task is not None:
                task, self._task = self._task, None
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def status(self) -> str:
        """One line for `/status`: how many keys, where they came from, and whether refreshes fail."""
        if self.value is None:
            return f"none yet ({self.health.last_error})" if self.health.last_error else "none yet"
        line = f"{len(self.keys)} keys, {self.origin}"
        if self.fetched_at is not None:
            line += f" {self.fetched_at:%Y-%m-%d %H:%M} UTC"
        if self.health.state.value == "down" and self.health.last_error:
            line += f", refresh failing: {self.health.last_error}"
        return line

    # --- the poller ---------------------------------------------------------------------------------
    async def run(self) -> None:
        if self.value is None:
            await self._load_stored()
        await super().run()

    async def poll(self) -> None:
        body = await (self.source.fetch(self.get_json) if self.source.fetch is not None else self._fetch_one())
        value, keys = self._parse(body)
        fetched_at = self.clock.now()
        try:
            await self.state.put(self.source.name, {"fetched_at": fetched_at.isoformat(), "body": body})
        except Exception as exc:  # the live value is good: a store that is away must not refuse it
            logger.warning("reference data not saved dataset=%s error=%s", self.source.name, describe(exc))
        self._apply(value, keys, origin="live", fetched_at=fetched_at)

    async def _fetch_one(self) -> Any:
        assert self.source.request is not None
        return await self.get_json(self.source.request)

    def _parse(self, body: Any) -> tuple[T, frozenset[str]]:
        value = self.source.parse(body)
        keys = frozenset(self.source.keys(value))
        if not keys and not self.source.allow_empty:
            raise ValueError(f"{self.source.name}: the body parsed to no keys at all; keeping the last good copy")
        return value, keys

    async def _load_stored(self) -> None:
        try:
            stored = await self.state.get(self.source.name)
        except Exception as exc:
            logger.warning("stored reference data unreadable dataset=%s error=%s", self.source.name, describe(exc))
            return
        if not isinstance(stored, dict) or "body" not in stored:
            return
        try:
            value, keys = self._parse(stored["body"])
            fetched_at = datetime.fromisoformat(str(stored.get("fetched_at")))
        except Exception as exc:
            logger.warning("stored reference data ignored dataset=%s error=%s", self.source.name, describe(exc))
            return
        logger.info(
            "reference data loaded from storage dataset=%s keys=%d fetched_at=%s",
            self.source.name,
            len(keys),
            fetched_at.isoformat(),
        )
        self._apply(value, keys, origin="stored", fetched_at=fetched_at)

    def _apply(self, value: T, keys: frozenset[str], *, origin: str, fetched_at: datetime) -> None:
        first = self.value is None
        change = Change(added=keys - self.keys, removed=self.keys - keys)
        self.value, self.keys, self.origin, self.fetched_at = value, keys, origin, fetched_at
        self.health.extra["keys"] = str(len(keys))
        self.health.extra["origin"] = origin
        self._ready.set()
        if not first and not change.added and not change.removed:
            return
        if not first:
            logger.info(
                "reference data changed dataset=%s added=%d removed=%d sample=%s",
                self.source.name,
                len(change.added),
                len(change.removed),
                ",".join(sorted(change.added)[:5]),
            )
        for listener in list(self._listeners):
            try:
                listener(value, change)
            except Exception:
                logger.exception("reference data listener failed dataset=%s", self.source.name)


class ReferenceRegistry:
    """Every dataset of the bot by name: `get(source)` returns the one shared `ReferenceData`."""

    def __init__(
        self,
        *,
        state: StateStore,
        budgets: BudgetRegistry,
        session: SessionSource | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.state = state
        self.budgets = budgets
        self.session = session
        self.clock = clock
        self.rand = rand
        self._datasets: dict[str, ReferenceData[Any]] = {}

    def get(self, source: RefSource[T]) -> ReferenceData[T]:
        found = self._datasets.get(source.name)
        if found is None:
            found = ReferenceData(
                source, state=self.state, budgets=self.budgets, session=self.session, clock=self.clock, rand=self.rand
            )
            self._datasets[source.name] = found
        elif found.source is not source and found.source != source:
            raise ValueError(f"two different reference sources are named {source.name!r}")
        return cast(ReferenceData[T], found)

    def all(self) -> list[ReferenceData[Any]]:
        return list(self._datasets.values())
