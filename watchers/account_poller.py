"""Watched wallets on venues read by snapshot only (Lighter, Pacifica): one generic poller per venue.

Each venue is an `AccountVenue`: which watched addresses are its own, the request of one account, the parser
to `hl_account.AccountSnapshot`s, the host's published limit and the venue's alert wording. The watcher
polls each of its addresses, feeds the snapshots to a `WalletBook` of that venue (so the alerts are the
Hyperliquid whale watcher's: silent seeding, a change told once as seen by a snapshot, distance warnings
where the venue publishes a liquidation price), and keeps the same promise as `hyperliquid_whales`: a book
is saved with the alerts it made before they are handed to the pipeline, then saved without them; a restart
hands saved ones again (their keys make that harmless).

Which addresses each venue polls:

- **Lighter** takes 0x (L1) addresses, the same format as Hyperliquid's, and the watch list does not say which
  venue a chat meant. Polling every 0x address on Lighter every minute would spend Lighter's small budget
  (60 requests a minute per IP) on wallets that have never touched it. So every watched 0x address is asked
  once; when Lighter lists no account for it, that is remembered (in the watcher's durable state, with when
  it was asked) and the address is asked again only every `PERPWATCH_VENUE_ACCOUNTS_ABSENT_RECHECK_S`
  (6 hours by default). Only an address with an account is polled on the regular schedule. An address
  found with an account after Lighter listed none is known to have held nothing there before, so what it
  holds then is told as opened (seen in a snapshot, up to one re-check late), not seeded silently.
- **Pacifica** takes Solana (base58) addresses, which no other venue here uses: every watched Solana address
  is Pacifica's and is polled on the schedule. Its answer cannot tell "no account" from "no positions", so
  none is ever set aside.

Schedule and budget: each polled address is due every `PERPWATCH_VENUE_ACCOUNTS_POLL_S` at most, and never
more often than the watcher's share of the host (`PERPWATCH_LIGHTER_ACCOUNTS_PER_MIN`,
`PERPWATCH_PACIFICA_ACCOUNTS_PER_MIN`) allows for all of them; one with a crossed distance warning every
`PERPWATCH_VENUE_ACCOUNTS_NEAR_POLL_S`. Every request also draws from the host's budget, declared at the
venue's published figure, which the venue's market-data poller shares. With nobody watching, nothing is
requested.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from perpwatch.accounts import AccountUnavailable, AccountView, NoAccount
from perpwatch.events import Event, Topic, Venue, is_solana_address
from watchers import lighter_accounts, pacifica_accounts
from watchers.base import EventSink, Watcher, WatcherState, describe
from watchers.hl_account import AccountSnapshot
from watchers.lookup import fetch_now
from watchers.poller import HostBudget, HttpStatusError, PollTuning, Request, RestPoller
from watchers.runtime import WatcherContext
from watchers.whale_book import WalletBook, account_view, pending_in, stored

logger = logging.getLogger(__name__)

BOOK_PREFIX = "book:"
ABSENT_PREFIX = "absent:"
WALLETS_REFRESH_S = 2.0
HELD_RETRY_S = 5.0
"""How soon a wallet whose alerts the pipeline refused is tried again."""
"""How often the watch lists are read (the store, not the venue): how soon a wallet a chat added is asked."""


@dataclass(frozen=True, slots=True)
class AccountVenue:
    """What the generic poller needs of one venue."""

    venue: Venue
    owns: Callable[[str], bool]
    """Whether a watched address is this venue's kind of address."""
    params: Callable[[str], Mapping[str, str]]
    parse: Callable[[Any, str, datetime], list[AccountSnapshot]]
    """(body, address, fetched at) -> snapshots; `[]` means the venue lists no account for the address."""
    host_limit_per_min: int
    """The venue's published request limit for the host (declared on the bot's one budget of that host)."""
    weight: int = 1
    link: str | None = None
    """The wallet's page, a template with `{address}`; None: the research names no such page."""
    position_note: str | None = None
    probes: bool = False
    """The address format is shared with another venue: an address without an account is set aside and
    asked again only every `absent_recheck_s`."""
    no_account: Callable[[HttpStatusError], bool] | None = None
    """An error answer that means "no such account" rather than a failure."""


def _lighter_parse(body: Any, address: str, at: datetime) -> list[AccountSnapshot]:
    return lighter_accounts.parse_accounts(body, address=address, at=at)


def _lighter_no_account(exc: HttpStatusError) -> bool:
    # Unverified (lighter_accounts docstring): a 400/404 whose text says the account is not found.
    return exc.status in (400, 404) and "not found" in str(exc).lower()


def _pacifica_parse(body: Any, address: str, at: datetime) -> list[AccountSnapshot]:
    return [pacifica_accounts.parse_positions(body, at=at)]


LIGHTER = AccountVenue(
    venue=Venue.LIGHTER,
    owns=lambda address: address.startswith("0x"),
    params=lighter_accounts.params,
    parse=_lighter_parse,
    host_limit_per_min=lighter_accounts.REQUESTS_PER_MIN,
    probes=True,
    no_account=_lighter_no_account,
)
PACIFICA = AccountVenue(
    venue=Venue.PACIFICA,
    owns=is_solana_address,
    params=pacifica_accounts.params,
    parse=_pacifica_parse,
    host_limit_per_min=pacifica_accounts.REQUESTS_PER_MIN,
    position_note=pacifica_accounts.NO_LIQUIDATION_PRICE,
)


class AccountPollSettings(Protocol):
    @property
    def venue_accounts_poll_s(self) -> float: ...
    @property
    def venue_accounts_near_poll_s(self) -> float: ...
    @property
    def venue_accounts_absent_recheck_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class AccountPollTuning:
    requests_per_min: int
    """This watcher's share of the host's budget."""
    poll_s: float
    near_poll_s: float
    absent_recheck_s: float

    @classmethod
    def from_settings(cls, settings: AccountPollSettings, requests_per_min: int) -> AccountPollTuning:
        return cls(
            requests_per_min=requests_per_min,
            poll_s=settings.venue_accounts_poll_s,
            near_poll_s=settings.venue_accounts_near_poll_s,
            absent_recheck_s=settings.venue_accounts_absent_recheck_s,
        )


class _Poller(RestPoller):
    def __init__(self, owner: AccountPollWatcher, sink: EventSink) -> None:
        super().__init__(
            f"{owner.name}:accounts",
            PollTuning(interval_s=1.0, jitter=0.0, retry_initial_s=5.0),
            budgets=owner.ctx.budgets,
            session=owner.ctx.session,
            clock=owner.clock,
            health=owner.health,
        )
        self.owner = owner
        self.sink = sink

    async def poll(self) -> None:
        await self.owner.poll_due(self, self.sink)


class AccountPollWatcher(Watcher):
    def __init__(self, spec: AccountVenue, url: str, tuning: AccountPollTuning, ctx: WatcherContext) -> None:
        super().__init__(ctx.name, frozenset({(Topic.WHALE, spec.venue)}), clock=ctx.clock)
        self.spec = spec
        self.url = url
        self.tuning = tuning
        self.ctx = ctx
        self.host = ctx.budgets.declare(url, spec.host_limit_per_min)
        self.share = HostBudget(f"{ctx.name} share", tuning.requests_per_min, clock=ctx.clock)
        """This watcher's part of the host's budget, so the venue's market-data poller keeps its own."""
        self.watched: set[str] = set()
        self.books: dict[str, WalletBook] = {}
        """Addresses with an account on the venue (or not yet asked), and what we believe they hold."""
        self.held: dict[str, list[Event]] = {}
        """Per wallet, alerts its book made that the pipeline refused: handed over before its next poll."""
        self.absent: dict[str, float] = {}
        """Addresses the venue listed no account for -> monotonic time they are asked again."""
        self.due: dict[str, float] = {}
        self._wallets_at: float | None = None

    # --- /whale ---------------------------------------------------------------------------------------
    def follows(self, address: str) -> bool:
        return self.spec.owns(address)

    async def account(self, address: str) -> AccountView:
        """The account now, from the host's budget (not this watcher's share)."""
        name = self.spec.venue.value.capitalize()
        request = Request(self.url, params=self.spec.params(address), weight=self.spec.weight)
        try:
            body = await fetch_now(self.ctx.session, self.host, request, name)
        except HttpStatusError as exc:
            if self.spec.no_account is not None and self.spec.no_account(exc):
                raise NoAccount(f"{name} lists no account for {address}") from None
            raise AccountUnavailable(f"{name} answered HTTP {exc.status}; try again later") from None
        snapshots = self.spec.parse(body, address, self.clock.now())
        if not snapshots:
            raise NoAccount(f"{name} lists no account for {address}")
        return account_view(address, self.spec.venue, snapshots)

    def _book(self, address: str, data: dict[str, Any] | None = None) -> WalletBook:
        venue: dict[str, Any] = {
            "venue": self.spec.venue,
            "link": self.spec.link,
            "source": self.name,
            "position_note": self.spec.position_note,
        }
        return WalletBook(address, **venue) if data is None else WalletBook.from_json(address, data, **venue)

    # --- the watch list -----------------------------------------------------------------------------------
    async def refresh_wallets(self, sink: EventSink) -> None:
        watched = await self.ctx.watched() if self.ctx.watched is not None else set()
        mine = {a for a in watched if self.spec.owns(a)}
        now = self.clock.monotonic()
        for address in sorted(mine - self.watched):
            data = await self.ctx.state.get(BOOK_PREFIX + address)
            if isinstance(data, dict):
                book = self._book(address, data)
                pending = pending_in(data)
                if pending:  # made before the last stop, maybe never accepted: their keys make this safe
                    await sink(pending)
                    await self._save(book, pending=[])
                if not book.stale(int(self.clock.now().timestamp() * 1000)):
                    self.books[address] = book  # else seeded afresh, silently, like the Hyperliquid books
            absent = await self.ctx.state.get(ABSENT_PREFIX + address) if self.spec.probes else None
            if isinstance(absent, dict) and address not in self.books:
                asked_s = float(absent.get("asked_ms", 0)) / 1000
                waited = self.clock.now().timestamp() - asked_s
                self.absent[address] = now + max(self.tuning.absent_recheck_s - waited, 0.0)
                self.due[address] = self.absent[address]
            else:
                self.books.setdefault(address, self._book(address))
                self.due[address] = now  # seeded (or caught up after a restart) first
        for address in self.watched - mine:  # forgotten with its stored book, as the Hyperliquid books are
            self.books.pop(address, None)
            self.absent.pop(address, None)
            self.due.pop(address, None)
            await self.ctx.state.delete(BOOK_PREFIX + address)
        self.watched = mine
        self._show()

    # --- the poll ----------------------------------------------------------------------------------------
    def _interval_s(self, book: WalletBook) -> float:
        if book.endangered:
            return self.tuning.near_poll_s
        return max(self.tuning.poll_s, 60.0 * max(len(self.books), 1) * self.spec.weight / self.tuning.requests_per_min)

    async def poll_due(self, poller: _Poller, sink: EventSink) -> None:
        now = self.clock.monotonic()
        if self._wallets_at is None or now - self._wallets_at >= WALLETS_REFRESH_S:
            self._wallets_at = now
            try:
                await self.refresh_wallets(sink)
            except Exception as exc:  # storage away: the books we have go on
                logger.warning("reading the watch lists failed; will retry error=%s", describe(exc))
            now = self.clock.monotonic()  # a wallet just added is due now, in this round
        for address in sorted((a for a, at in self.due.items() if at <= now), key=self.due.__getitem__):
            if address not in self.watched:
                continue
            try:
                await self._poll_one(poller, address, sink)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one wallet's bad answer costs the others nothing; it is asked again
                self.health.parse_errors += 1
                logger.warning(
                    "account poll failed venue=%s wallet=%s error=%s", self.spec.venue, address, describe(exc)
                )
                book = self.books.get(address)
                self.due[address] = self.clock.monotonic() + (
                    min(HELD_RETRY_S, self.tuning.near_poll_s)
                    if address in self.held
                    else self._interval_s(book)
                    if book is not None
                    else self.tuning.poll_s
                )
                if isinstance(exc, OSError | TimeoutError | aiohttp.ClientError | HttpStatusError):
                    raise  # the host is away or limiting us: the poller's back-off applies to every wallet
            finally:
                self._show()  # a round waiting for the share shows what it has spent so far

    async def _poll_one(self, poller: _Poller, address: str, sink: EventSink) -> None:
        held = self.held.get(address)
        if held:  # alerts the pipeline refused last time go first, before the book moves again
            await sink(held)
            del self.held[address]
            book = self.books.get(address)
            if book is not None:
                await self._save(book, pending=[])
        await self.share.acquire(self.spec.weight)
        at = self.clock.now()
        request = Request(self.url, params=self.spec.params(address), weight=self.spec.weight)
        try:
            snapshots = self.spec.parse(await poller.get_json(request), address, at)
        except HttpStatusError as exc:
            if self.spec.no_account is None or not self.spec.no_account(exc):
                raise
            snapshots = []
        if not snapshots:
            await self._set_aside(address, at)
            return
        was_absent = self.absent.pop(address, None) is not None
        if was_absent:
            await self.ctx.state.delete(ABSENT_PREFIX + address)
        book = self.books.get(address)
        if book is None:
            data = await self.ctx.state.get(BOOK_PREFIX + address)
            book = self.books[address] = self._book(address, data if isinstance(data, dict) else None)
        if was_absent and not book.seeded:
            book.seeded = True  # the venue said it had no account: whatever it holds now was opened since
        events = book.on_snapshots(snapshots)
        book.reconciled(int(at.timestamp() * 1000))
        await self._save(book, pending=events)
        if events:
            try:
                await sink(events)
            except Exception:
                # The book has moved past them: held here (and in the store) and handed over first next time.
                self.held[address] = events
                raise
            self.health.events += len(events)
            self.health.last_event_at = self.clock.now()
        await self._save(book, pending=[])
        self.due[address] = self.clock.monotonic() + self._interval_s(book)

    async def _set_aside(self, address: str, at: datetime) -> None:
        """No account on this venue: asked again only every `absent_recheck_s`. A book seeded earlier is kept
        as it was (an account the venue stops listing is not described, so nothing is told of it)."""
        if not self.spec.probes:
            raise ValueError("the venue listed no account, and its answer always should")
        book = self.books.get(address)
        if book is not None and not book.seeded:
            del self.books[address]
        await self.ctx.state.put(ABSENT_PREFIX + address, {"asked_ms": int(at.timestamp() * 1000)})
        self.absent[address] = self.due[address] = self.clock.monotonic() + self.tuning.absent_recheck_s

    async def _save(self, book: WalletBook, *, pending: Sequence[Event]) -> None:
        await self.ctx.state.put(BOOK_PREFIX + book.wallet, stored(book, pending))

    # --- /status -------------------------------------------------------------------------------------------
    def _show(self) -> None:
        now = self.clock.monotonic()
        polled = [a for a in self.due if a not in self.absent]
        stalest = max((now - self.due[a] for a in polled), default=0.0)
        near = sum(b.endangered for b in self.books.values())
        text = f"{len(polled)} polled, {near} near"
        if self.spec.probes:
            text += (
                f", {len(self.absent)} without an account here (asked again every {self.tuning.absent_recheck_s:.0f}s)"
            )
        self.health.extra["wallets"] = text
        self.health.extra["budget"] = f"{self.share.describe()} of this watcher; host {self.host.describe()}"
        self.health.extra["stalest wallet"] = f"{stalest:.0f}s overdue" if stalest > 0 else "none overdue"

    # --- running ----------------------------------------------------------------------------------------------
    async def run(self, sink: EventSink) -> None:
        self.health.state = WatcherState.UP
        self._show()
        poller = _Poller(self, sink)
        task = asyncio.create_task(poller.run(), name=f"{self.name}:accounts")
        try:
            await task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
