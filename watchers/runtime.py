"""The context every watcher gets instead of building its own: one HTTP session, the clock, its own durable
state, the shared reference data and request budgets, and the sink.

`Runtime` is built once per bot (the app owns it and closes it on shutdown); `runtime.context(name)` is
one watcher's view of it. The durable state behind it is a `KeyValueStore` (the storage repository in the
bot, `MemoryKv` in tests and wherever no database is wired), so watchers never import `storage` or `bot`.
Reference data shared by watchers of one venue is stored under the scope `REFDATA_SCOPE`, not under the
name of whichever watcher asked first.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from perpwatch.buybacks import BuybackLedger
from perpwatch.clock import SYSTEM_CLOCK, Clock
from watchers.base import EventSink
from watchers.poller import BudgetRegistry, SessionSource
from watchers.refdata import ReferenceRegistry

REFDATA_SCOPE = "refdata"
"""The state scope (the `watcher` column) of every dataset's last good copy."""


class KeyValueStore(Protocol):
    """JSON values by (scope, key) that outlive the process; `storage.WatcherStateRepo` is one."""

    async def get_value(self, watcher: str, key: str) -> Any | None: ...

    async def put_value(self, watcher: str, key: str, value: Any) -> None: ...

    async def delete_value(self, watcher: str, key: str) -> None: ...


class MemoryKv:
    """A `KeyValueStore` that lasts as long as the process: for tests and a bot wired without storage."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}

    async def get_value(self, watcher: str, key: str) -> Any | None:
        return self.values.get((watcher, key))

    async def put_value(self, watcher: str, key: str, value: Any) -> None:
        self.values[(watcher, key)] = value

    async def delete_value(self, watcher: str, key: str) -> None:
        self.values.pop((watcher, key), None)


WatchedSource = Callable[[], Awaitable[set[str]]]


class DurableState:
    """One scope's keys (a watcher's cursors, or the shared reference data)."""

    def __init__(self, kv: KeyValueStore, scope: str) -> None:
        self.kv = kv
        self.scope = scope

    async def get(self, key: str) -> Any | None:
        return await self.kv.get_value(self.scope, key)

    async def put(self, key: str, value: Any) -> None:
        await self.kv.put_value(self.scope, key, value)

    async def delete(self, key: str) -> None:
        await self.kv.delete_value(self.scope, key)


class SharedSession:
    """The bot's one `aiohttp.ClientSession`, made on first use: aiohttp binds a session to the running
    loop, and watchers are built before the loop runs. Call it for the session; `close()` on shutdown.

    One session means one connection pool and DNS cache for every poller and stream of a host."""

    def __init__(self, factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession) -> None:
        self._factory = factory
        self._session: aiohttp.ClientSession | None = None

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._factory()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class WatcherContext:
    """What one watcher is given. `session` is None only for watchers built without a runtime session
    (then each stream opens its own, as before); `sink` is the one `run(sink)` also receives."""

    name: str
    clock: Clock
    session: SessionSource | None
    state: DurableState
    refdata: ReferenceRegistry
    budgets: BudgetRegistry
    sink: EventSink | None = None
    watched: WatchedSource | None = None
    """Every address some chat watches (the store's watch lists), for watchers that follow wallets."""
    buybacks: BuybackLedger | None = None
    """The store of buyback programmes and what they bought (the store's `BuybackRepo`)."""


class Runtime:
    """Everything the watchers of one bot share. Build once, hand `context(name)` to each watcher."""

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        kv: KeyValueStore | None = None,
        session: SessionSource | None = None,
        sink: EventSink | None = None,
        rand: Callable[[], float] = random.random,
        watched: WatchedSource | None = None,
        buybacks: BuybackLedger | None = None,
    ) -> None:
        self.clock = clock
        self.watched = watched
        self.buybacks = buybacks
        self.kv: KeyValueStore = kv if kv is not None else MemoryKv()
        self.session = session
        self.sink = sink
        self.budgets = BudgetRegistry(clock=clock)
        self.refdata = ReferenceRegistry(
            state=DurableState(self.kv, REFDATA_SCOPE),
            budgets=self.budgets,
            session=session,
            clock=clock,
            rand=rand,
        )

    def context(self, name: str) -> WatcherContext:
        return WatcherContext(
            name=name,
            clock=self.clock,
            session=self.session,
            state=DurableState(self.kv, name),
            refdata=self.refdata,
            budgets=self.budgets,
            sink=self.sink,
            watched=self.watched,
            buybacks=self.buybacks,
        )

    async def close(self) -> None:
        """Closes the shared session if the runtime made it (a `SharedSession`); a session passed in as
        such is its owner's to close."""
        if isinstance(self.session, SharedSession):
            await self.session.close()
