"""Hyperliquid whales: every watched wallet's positions, and large trades by anyone, within the public limits.

No per-user subscriptions (the venue allows 10 users per IP): the public `trades` stream of every perp coin
names both sides of each trade (`users` = [buyer, seller]), so one shared connection (the `hyperliquid`
watcher's, or this watcher's own when that one is not running) gives every watched wallet's trades in real
time, and every trade above `PERPWATCH_WHALE_TRADE_MIN_USD` by any address. A reconcile poll keeps each
wallet's book true (`watchers.whale_book`): `clearinghouseState` per dex (the main one and every HIP-3 dex
from `perpDexs`), with the wallet's fills and ledger fetched only when a position shrank or vanished without
trades to explain it. Wallets whose position crossed a distance warning are polled every
`PERPWATCH_WHALE_NEAR_POLL_S`, the rest as often as `PERPWATCH_WHALE_WEIGHT_PER_MIN` allows but not more
than every `PERPWATCH_WHALE_POLL_S`. Every request also draws from the info host's one budget
(1,200 weight a minute per IP, research §1.4), which the bot's other Hyperliquid requests share.

Nothing lost, nothing doubled: a book is saved with the alerts it made before they are handed to the
pipeline, and a restart hands the saved ones again (their keys make that harmless), so an alert is never
lost between the book moving and the pipeline accepting it, and never told twice by a stale book.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import aiohttp

from perpwatch.accounts import AccountUnavailable, AccountView
from perpwatch.events import Event, Topic, Venue, WhaleTradeBody
from watchers import hl_account as acct
from watchers import venuekit as kit
from watchers.base import EventSink, Watcher, WatcherState, describe
from watchers.lookup import fetch_now
from watchers.poller import HostBudget, HttpStatusError, OwnerPoller, PollTuning, Request
from watchers.pool import Consumer
from watchers.runtime import WatcherContext
from watchers.whale_book import EXPLORER, SOURCE, WalletBook, account_view, pending_in, stored

logger = logging.getLogger(__name__)

NAME = "hyperliquid_whales"
BOOK_PREFIX = "book:"
DEXES_KEY = "dexes"
DEXES_REFRESH_S = 3600.0
WALLETS_REFRESH_S = 2.0
"""How soon a wallet a chat just added is seeded."""
RETRY_INITIAL_S = 0.05
RETRY_MAX_S = 5.0
"""Waits between tries to hand alerts over while the pipeline or the store refuses them."""
FILLS_LOOKBACK_MS = 3_600_000
"""A first fills query looks back an hour: what a liquidation check needs, and little weight."""


class WhaleSettings(Protocol):
    @property
    def hyperliquid_info_url(self) -> str: ...
    @property
    def whale_trade_min_usd(self) -> Decimal: ...
    @property
    def whale_weight_per_min(self) -> int: ...
    @property
    def whale_poll_s(self) -> float: ...
    @property
    def whale_near_poll_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class WhaleTuning:
    trade_min_usd: Decimal
    weight_per_min: int
    poll_s: float
    near_poll_s: float

    @classmethod
    def from_settings(cls, settings: WhaleSettings) -> WhaleTuning:
        return cls(
            trade_min_usd=settings.whale_trade_min_usd,
            weight_per_min=settings.whale_weight_per_min,
            poll_s=settings.whale_poll_s,
            near_poll_s=settings.whale_near_poll_s,
        )


def whale_trades(frame: Any, min_usd: Decimal) -> list[Event]:
    """The trades of a `trades` frame worth at least `min_usd`, by any address: both sides named."""
    events: list[Event] = []
    for i, raw in enumerate(frame.get("data") or ()):
        where = f"trades[{i}]"
        px = kit.figure(raw.get("px"), f"{where}.px")
        sz = kit.figure(raw.get("sz"), f"{where}.sz")
        if px * sz < min_usd:
            continue
        users = raw.get("users")
        if not isinstance(users, list) or len(users) != 2:
            raise ValueError(f"{where}.users={str(users)[:120]} is not a [buyer, seller] pair")
        coin = str(raw.get("coin"))
        tid = kit.integer(raw.get("tid"), f"{where}.tid")
        buyer, seller = (str(u).lower() for u in users)
        taker = "buy" if raw.get("side") == "B" else "sell" if raw.get("side") == "A" else None
        if taker is None:
            raise ValueError(f"{where}.side={raw.get('side')!r} is neither B nor A")
        events.append(
            Event(
                key=f"hl:trade:{coin}:{tid}",
                topic=Topic.WHALE,
                source=SOURCE,
                venue=Venue.HYPERLIQUID,
                symbol=coin,
                usd=px * sz,
                occurred_at=kit.ms_time(raw.get("time"), f"{where}.time"),
                link=EXPLORER + (buyer if taker == "buy" else seller),
                body=WhaleTradeBody(
                    coin=coin, taker_side=taker, size=sz, price=px, notional_usd=px * sz, buyer=buyer, seller=seller
                ),
            )
        )
    return events


class _Reconciler(OwnerPoller):
    """One round: every wallet that is due, most overdue first, each within both budgets."""

    def __init__(self, owner: HyperliquidWhaleWatcher) -> None:
        super().__init__(
            owner, PollTuning(interval_s=1.0, jitter=0.0, retry_initial_s=5.0), name=f"{owner.name}:reconcile"
        )
        self.owner = owner

    async def poll(self) -> None:
        await self.owner.reconcile_due(self)

    async def info(self, body: dict[str, Any]) -> Any:
        weight = acct.weight(str(body["type"]))
        await self.owner.share.acquire(weight)
        return await self.get_json(Request(self.owner.info_url, method="POST", json_body=body, weight=weight))


class HyperliquidWhaleWatcher(Watcher):
    def __init__(self, info_url: str, tuning: WhaleTuning, ctx: WatcherContext) -> None:
        super().__init__(ctx.name, frozenset({(Topic.WHALE, Venue.HYPERLIQUID)}), clock=ctx.clock)
        self.ctx = ctx
        self.info_url = info_url
        self.tuning = tuning
        self.host = ctx.budgets.declare(info_url, acct.BUDGETED_PER_MIN)
        self.share = HostBudget(f"{ctx.name} share", tuning.weight_per_min, clock=ctx.clock)
        """This watcher's own part of the host's budget, so `/whale` and the other pollers keep theirs."""
        self.books: dict[str, WalletBook] = {}
        self.due: dict[str, float] = {}
        """Wallet -> monotonic time its next reconcile is due."""
        self.dexes: list[str] = [""]
        self._dexes_at: float | None = None
        self._outbox: list[tuple[WalletBook, list[Event]]] = []
        self._wake = asyncio.Event()
        self.consumer = Consumer(ctx.name, self.on_frame)
        self.own_stream: Callable[[], Watcher] | None = None
        """Makes its own trades connection, for when no `hyperliquid` watcher's is shared (the registry sets
        it, and unsets it when it joins the two); made only when run, so only one reads the markets."""
        self._sink: EventSink | None = None

    # --- the shared trades stream ------------------------------------------------------------------
    def on_frame(self, frame: Any) -> list[Event]:
        """A frame of the shared connection. Whale trades and watched wallets' changes are queued with the
        books they moved, to be saved before the pipeline hears of them: nothing is returned here."""
        if not isinstance(frame, dict) or frame.get("channel") != "trades":
            return []
        events = whale_trades(frame, self.tuning.trade_min_usd)
        if events:
            self._queue(None, events)
        # The seeded wallets this frame names, looked up from its few users rather than the frame checked
        # against every book: the cost of a frame does not grow with the watch list.
        named = {str(u).lower() for raw in frame.get("data") or () if isinstance(raw, dict) for u in _users(raw)}
        seeded = [w for w in named if (b := self.books.get(w)) is not None and b.seeded]
        if not seeded and not any(b.seeded for b in self.books.values()):
            return []
        per_wallet: dict[str, list[acct.WalletTrade]] = {}
        for wallet, trade in acct.fills_for_wallets(frame, seeded):  # checks every trade's users, as before
            per_wallet.setdefault(wallet, []).append(trade)
        for wallet, trades in per_wallet.items():
            book = self.books[wallet]
            moved = book.on_trades(trades)
            self._queue(book, moved)
            if book.endangered:  # a held change wants its fills soon
                self.due[wallet] = min(self.due.get(wallet, 0.0), self.clock.monotonic())
        return []

    def _queue(self, book: WalletBook | None, events: list[Event]) -> None:
        if book is not None or events:
            self._outbox.append((book, events) if book is not None else (_NO_BOOK, events))
            self._wake.set()

    async def _deliver(self, sink: EventSink) -> None:
        """Hand each batch over until it is taken: the pipeline or the store away (a locked file, a server
        restarting) holds the alerts here and retries with a growing wait, as the streams do."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outbox = self._outbox, []
            delay = RETRY_INITIAL_S
            while True:
                try:
                    await self._hand_over(sink, batch)
                    break
                except asyncio.CancelledError:
                    self._outbox = batch + self._outbox  # a restart of this watcher hands them over
                    raise
                except Exception as exc:
                    logger.warning("handing whale alerts over failed; holding them error=%s", describe(exc))
                    self.health.errors += 1
                    await self.clock.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)

    async def _hand_over(self, sink: EventSink, batch: list[tuple[WalletBook, list[Event]]]) -> None:
        """Save the books that moved, then hand over their alerts; a crash between the two re-sends them."""
        books = {id(b): b for b, _ in batch if b is not _NO_BOOK}
        events = [e for _, evs in batch for e in evs]
        for book in books.values():
            book_events = [e for b, evs in batch if b is book for e in evs]
            await self._save(book, pending=book_events)
        if events:
            await sink(events)
            self.health.events += len(events)
            self.health.last_event_at = self.clock.now()
        for book in books.values():
            await self._save(book, pending=[])

    async def _save(self, book: WalletBook, *, pending: Sequence[Event]) -> None:
        await self.ctx.state.put(BOOK_PREFIX + book.wallet, stored(book, pending))

    # --- the watch list ---------------------------------------------------------------------------------
    async def refresh_wallets(self, sink: EventSink) -> None:
        watched = await self.ctx.watched() if self.ctx.watched is not None else set()  # none: trades only
        watched = {w for w in watched if w.startswith("0x")}  # Solana (Pacifica) addresses are not Hyperliquid's
        for wallet in sorted(watched - set(self.books)):
            data = await self.ctx.state.get(BOOK_PREFIX + wallet)
            if isinstance(data, dict):
                book = WalletBook.from_json(wallet, data)
                pending = pending_in(data)
                if pending:  # made before the last stop, maybe never accepted: their keys make this safe
                    await sink(pending)
                if book.stale(int(self.clock.now().timestamp() * 1000)):
                    book = WalletBook(wallet)  # too old to compare with: seeded afresh, silently
            else:
                book = WalletBook(wallet)
            self.books[wallet] = book
            self.due[wallet] = self.clock.monotonic()  # seeded (or reconciled after a restart) first
        for wallet in set(self.books) - watched:
            # Forgotten with its stored book: a chat that adds it again later starts from a fresh seed, not
            # from a "what changed while you were away" against positions of weeks ago.
            del self.books[wallet]
            self.due.pop(wallet, None)
            await self.ctx.state.delete(BOOK_PREFIX + wallet)
        self._show()

    # --- the reconcile poll --------------------------------------------------------------------------------
    def _interval_s(self, book: WalletBook) -> float:
        if book.endangered:
            return self.tuning.near_poll_s
        per_round = 2 * len(self.dexes) * max(len(self.books), 1)
        return max(self.tuning.poll_s, 60.0 * per_round / self.tuning.weight_per_min)

    async def reconcile_due(self, poller: _Reconciler) -> None:
        await self._refresh_dexes(poller)
        now = self.clock.monotonic()
        for wallet in sorted((w for w, at in self.due.items() if at <= now), key=self.due.__getitem__):
            book = self.books.get(wallet)
            if book is None:
                continue
            try:
                await self._reconcile(poller, book)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one wallet's bad answer costs the others nothing; it is tried again
                self.health.parse_errors += 1
                logger.warning("reconcile failed wallet=%s error=%s", wallet, describe(exc))
                if isinstance(exc, OSError | TimeoutError | aiohttp.ClientError | HttpStatusError):
                    raise  # the host is away or limiting us: the poller's back-off applies to every wallet
            self.due[wallet] = self.clock.monotonic() + self._interval_s(book)
        self._show()

    async def _reconcile(self, poller: _Reconciler, book: WalletBook) -> None:
        asked_ms = int(self.clock.now().timestamp() * 1000)
        snapshots = []
        for dex in self.dexes:
            body: dict[str, Any] = {"type": "clearinghouseState", "user": book.wallet}
            if dex:
                body["dex"] = dex
            snapshots.append(acct.parse_clearinghouse(await poller.info(body), dex=dex))
        fills: list[acct.Fill] = []
        ledger: list[acct.LedgerUpdate] = []
        if book.vanished(snapshots):
            start = book.checked_ms if book.checked_ms is not None else asked_ms - FILLS_LOOKBACK_MS
            query = {"type": "userFillsByTime", "user": book.wallet, "startTime": start}
            fills = acct.parse_user_fills(await poller.info(query))
            if not any(acct.liquidation_of(book.wallet, f) for f in fills if not f.is_spot):
                raw = await poller.info(
                    {"type": "userNonFundingLedgerUpdates", "user": book.wallet, "startTime": start}
                )
                ledger = [acct.parse_ledger_update(u, f"ledger[{i}]") for i, u in enumerate(raw or ())]
        events = book.on_snapshots(snapshots, fills=[f for f in fills if not f.is_spot], ledger=ledger)
        book.reconciled(asked_ms)
        self._queue(book, events)

    async def _refresh_dexes(self, poller: _Reconciler) -> None:
        now = self.clock.monotonic()
        if self._dexes_at is not None and now - self._dexes_at < DEXES_REFRESH_S:
            return
        if self._dexes_at is None:
            stored = await self.ctx.state.get(DEXES_KEY)
            if isinstance(stored, list) and stored:
                self.dexes = [str(d) for d in stored]
        self._dexes_at = now
        try:
            self.dexes = acct.parse_perp_dexs(await poller.info({"type": "perpDexs"}))
        except Exception as exc:  # the main dex is followed whatever this says; the stored list stays
            logger.warning("perpDexs failed; following dexes=%s error=%s", self.dexes, describe(exc))
            return
        await self.ctx.state.put(DEXES_KEY, self.dexes)

    # --- /whale ---------------------------------------------------------------------------------------
    def follows(self, address: str) -> bool:
        return address.startswith("0x")

    async def account(self, address: str) -> AccountView:
        """A wallet's positions on every dex, fetched now from the host's budget (not this watcher's share,
        so a query is not queued behind the reconcile)."""
        if not address.startswith("0x"):
            raise AccountUnavailable("Hyperliquid accounts are 0x addresses; this one is a Solana (Pacifica) address")
        snapshots = []
        for dex in self.dexes:
            body: dict[str, Any] = {"type": "clearinghouseState", "user": address}
            if dex:
                body["dex"] = dex
            request = Request(self.info_url, method="POST", json_body=body, weight=acct.weight("clearinghouseState"))
            try:
                raw = await fetch_now(self.ctx.session, self.host, request, "Hyperliquid")
            except HttpStatusError as exc:
                raise AccountUnavailable(f"Hyperliquid answered HTTP {exc.status}; try again later") from None
            snapshots.append(acct.parse_clearinghouse(raw, dex=dex))
        return account_view(address, Venue.HYPERLIQUID, snapshots)

    # --- /status ---------------------------------------------------------------------------------------
    def _show(self) -> None:
        now = self.clock.monotonic()
        stalest = max((now - at for at in self.due.values()), default=0.0)
        self.health.extra["wallets"] = (
            f"{len(self.books)} watched, {sum(b.endangered for b in self.books.values())} near"
        )
        self.health.extra["dexes"] = ", ".join(d or "main" for d in self.dexes)
        self.health.extra["budget"] = f"{self.share.describe()} of this watcher; host {self.host.describe()}"
        self.health.extra["stalest wallet"] = f"{max(stalest, 0.0):.0f}s overdue" if stalest > 0 else "none overdue"

    # --- running ------------------------------------------------------------------------------------------
    async def run(self, sink: EventSink) -> None:
        self.health.state = WatcherState.UP
        poller = _Reconciler(self)
        tasks = [
            asyncio.create_task(self._deliver(sink), name=f"{self.name}:deliver"),
            asyncio.create_task(poller.run(), name=f"{self.name}:reconcile"),
            asyncio.create_task(self._watch_list(sink), name=f"{self.name}:wallets"),
        ]
        self.health.extra["trades"] = "own connection" if self.own_stream is not None else "the hyperliquid watcher's"
        if self.own_stream is not None:
            tasks.append(asyncio.create_task(self.own_stream().run(sink), name=f"{self.name}:trades"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _watch_list(self, sink: EventSink) -> None:
        while True:
            try:
                await self.refresh_wallets(sink)
            except Exception as exc:  # storage away: the books we have go on
                logger.warning("reading the watch lists failed; will retry error=%s", describe(exc))
            await self.clock.sleep(WALLETS_REFRESH_S)


def _users(trade: dict[Any, Any]) -> list[Any]:
    users = trade.get("users")
    return users if isinstance(users, list) else []


_NO_BOOK = WalletBook("0x" + "0" * 40)
"""Marks queued alerts no book made (whale trades by anyone)."""
