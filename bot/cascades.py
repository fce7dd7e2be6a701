"""Cascade detection: liquidations bunched in a sliding window become one alert that grows by revisions.

The detector sits in the pipeline's one door, before a commit: from the liquidations about to be stored it
plans the cascade revisions and the folds that go into the *same* transaction, so a single and the cascade
message that carries it are stored together or not at all (nothing is counted twice after a failed commit,
and a crash leaves nothing half told). A plan changes nothing until `apply`, which the pipeline calls only
once its commit succeeded.

Two scopes: one venue and symbol, and the whole market. A scope opens a cascade when its window holds at
least `min_count` liquidations or `min_usd` in all; as it grows it stores a new revision of the cascade's
thread at most once per `revision_every` (the outbox keeps only the newest pending one per chat and sends it
as an edit of the message already sent, paced like any send). A storm would otherwise write a revision on
every commit, which costs accept more than the liquidations themselves; growth in between is carried by the
next revision, which the next commit or the pipeline's tick writes once it is due. It ends when its window
falls below half of both thresholds, with a final revision. A single inside a symbol cascade is folded into
it: a chat that takes cascades for that market and would hear this cascade is sent the cascade message
instead of the single (the log records the cascade's total beside the single, so the chat's minimum is
compared with it).

Time is the venue's (`occurred_at`), so a burst replayed after a reconnect keeps its shape; a liquidation
older than the window is history, not a cascade. Which keys were counted is kept for the window, so a
replay the store will refuse as a duplicate is not counted again; a restart rebuilds windows and open
cascades from the log (`load`), including growth stored after the newest revision (the singles accepted
after it), so a crash between revisions loses none of them from the cascade's figures.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from perpwatch.events import CascadeBody, Event, LiquidationBody, PositionSide, Topic, Venue
from storage.history import History

SOURCE = "cascade"
MARKET = "market"


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_count: int
    min_usd: Decimal

    def met(self, count: int, total: Decimal) -> bool:
        """One large liquidation is a large liquidation, not a cascade: the USD arm needs two at least."""
        return count >= self.min_count or (count >= 2 and total >= self.min_usd)

    def faded(self, count: int, total: Decimal) -> bool:
        """Hysteresis: a cascade ends only well below what opened it, so one hovering at it does not flap."""
        return count * 2 < self.min_count and total * 2 < self.min_usd


@dataclass(frozen=True, slots=True)
class CascadeSettings:
    window: timedelta
    symbol: Thresholds
    market: Thresholds
    revision_every: timedelta = timedelta(seconds=2)
    """Growth written at most this often; the platforms' edit pacing shows a chat no more than that anyway."""


@dataclass(frozen=True, slots=True)
class _Hit:
    key: str
    at: datetime
    usd: Decimal
    side: PositionSide
    venue: Venue
    symbol: str
    sampled: bool


@dataclass(slots=True)
class _Open:
    """A cascade in progress: its running figures, as its newest revision states them."""

    thread: str
    body: CascadeBody
    revision: int
    venue: Venue | None
    symbol: str | None
    written_at: datetime
    """When the newest stored revision was planned: growth waits until `revision_every` after it."""
    pending: bool = False
    """The body holds growth no stored revision states yet."""


@dataclass(slots=True)
class _Scope:
    """A scope's window (its hits in arrival order) with running sums, so a commit costs what it adds and
    what expired, not the window's length."""

    hits: deque[_Hit] = field(default_factory=deque)
    count: int = 0
    usd: Decimal = Decimal(0)
    open: _Open | None = None

    def expired(self, horizon: datetime) -> tuple[int, Decimal]:
        """What falls out of the window at `horizon`: the hits before it at the front."""
        count, usd = 0, Decimal(0)
        for hit in self.hits:
            if hit.at >= horizon:
                break
            count, usd = count + 1, usd + hit.usd
        return count, usd

    def advance(self, added: Sequence[_Hit], horizon: datetime) -> None:
        self.hits.extend(added)
        self.count += len(added)
        self.usd += sum((h.usd for h in added), Decimal(0))
        while self.hits and self.hits[0].at < horizon:
            gone = self.hits.popleft()
            self.count, self.usd = self.count - 1, self.usd - gone.usd


@dataclass(frozen=True, slots=True)
class Fold:
    """A single carried by a cascade: chats taking that cascade hear it there, not on its own."""

    key: str
    thread: str
    usd: Decimal


@dataclass(frozen=True, slots=True)
class _Change:
    added: list[_Hit]
    open: _Open | None


@dataclass
class Plan:
    events: list[Event]
    folds: list[Fold]
    changes: dict[str, _Change]
    horizon: datetime


_EMPTY = _Scope()


def _scope_key(venue: Venue | None, symbol: str | None) -> str:
    return MARKET if venue is None else f"{venue.value}:{symbol}"


class CascadeDetector:
    def __init__(self, settings: CascadeSettings) -> None:
        self.settings = settings
        self._scopes: dict[str, _Scope] = {}
        self._seen: dict[str, datetime] = {}
        """Keys counted and still inside the window, in arrival order (a replay is not counted again)."""

    # --- planning ------------------------------------------------------------------------------------
    def plan(self, incoming: Sequence[Event], now: datetime, *, flush: bool = False) -> Plan:
        """The cascade revisions and folds these liquidations make, and the cascades the clock ended. The
        detector is left as it was: `apply` makes the plan true once its commit succeeded. `flush` writes
        held growth now (a shutdown: the chats see what their folded singles went into)."""
        horizon = now - self.settings.window
        added: dict[str, list[_Hit]] = {}
        fresh_keys: set[str] = set()
        for event in incoming:
            hit = _hit(event)
            if hit is None or hit.at < horizon or hit.key in self._seen or hit.key in fresh_keys:
                continue
            fresh_keys.add(hit.key)
            for name in (_scope_key(hit.venue, hit.symbol), MARKET):
                added.setdefault(name, []).append(hit)
        names = list(added) + [n for n, s in self._scopes.items() if s.open is not None and n not in added]
        events: list[Event] = []
        folds: list[Fold] = []
        changes: dict[str, _Change] = {}
        for name in names:
            scope = self._scopes.get(name, _EMPTY)
            new = added.get(name, [])
            gone_count, gone_usd = scope.expired(horizon)
            count = scope.count - gone_count + len(new)
            total = scope.usd - gone_usd + sum((h.usd for h in new), Decimal(0))
            thresholds = self.settings.market if name == MARKET else self.settings.symbol
            cascade = dataclasses.replace(scope.open) if scope.open is not None else None
            if cascade is None:
                if new and thresholds.met(count, total):
                    window = [h for h in scope.hits if h.at >= horizon] + new
                    cascade = _opened(name, window, self.settings.window, now)
                    events.append(self._revision(cascade))
                    if name != MARKET:
                        folds += [Fold(h.key, cascade.thread, cascade.body.usd) for h in window]
            elif new:
                cascade.body = _grown(cascade.body, new)
                cascade.pending = True
                if name != MARKET:
                    folds += [Fold(h.key, cascade.thread, cascade.body.usd) for h in new]
            elif thresholds.faded(count, total) or cascade.body.last_at < horizon:
                cascade.body = cascade.body.model_copy(update={"closed": True})
                cascade.revision = 2 * cascade.body.count + 1
                events.append(self._revision(cascade))
                cascade = None
            if cascade is not None and cascade.pending and (flush or self._due(cascade, now)):
                cascade.revision = 2 * cascade.body.count
                cascade.written_at, cascade.pending = now, False
                events.append(self._revision(cascade))
            changes[name] = _Change(new, cascade)
        return Plan(events=events, folds=folds, changes=changes, horizon=horizon)

    def apply(self, plan: Plan) -> None:
        """The plan's commit succeeded: its figures are now what the log says."""
        for name, change in plan.changes.items():
            scope = self._scopes.setdefault(name, _Scope())
            scope.advance(change.added, plan.horizon)
            scope.open = change.open
            if not scope.hits and scope.open is None:
                del self._scopes[name]
            if name != MARKET:  # every hit is in exactly one symbol scope: remember each key once
                self._seen.update((h.key, h.at) for h in change.added)
        expired = []
        for key, at in self._seen.items():  # arrival order: stop at the first still inside
            if at >= plan.horizon:
                break
            expired.append(key)
        for key in expired:
            del self._seen[key]

    def _due(self, cascade: _Open, now: datetime) -> bool:
        """A wall clock stepped back (NTP) counts as due: growth is never held longer than it should be."""
        return now >= cascade.written_at + self.settings.revision_every or now < cascade.written_at

    @property
    def holding(self) -> bool:
        """Some open cascade has growth no stored revision states yet."""
        return any(s.open is not None and s.open.pending for s in self._scopes.values())

    @property
    def open_cascades(self) -> list[str]:
        return sorted(s.open.thread for s in self._scopes.values() if s.open is not None)

    # --- a restart ------------------------------------------------------------------------------------
    def load(
        self,
        recent: Iterable[Event],
        open_revisions: Iterable[Event],
        now: datetime,
        *,
        later: Mapping[str, Sequence[Event]] | None = None,
    ) -> None:
        """Windows from the liquidations of the last window, and open cascades from their newest revision,
        so a cascade in progress when the bot stopped goes on in the same message. `later`: per thread, the
        liquidations accepted after its newest revision (in its scope, the growth no revision stated yet);
        they join its figures and the next commit or tick writes the revision that states them."""
        horizon = now - self.settings.window
        for event in recent:
            hit = _hit(event)
            if hit is None or hit.at < horizon or hit.key in self._seen:
                continue
            self._seen[hit.key] = hit.at
            for name in (_scope_key(hit.venue, hit.symbol), MARKET):
                self._scopes.setdefault(name, _Scope()).advance([hit], horizon)
        for event in open_revisions:
            body = event.body
            if not isinstance(body, CascadeBody) or body.closed or event.thread is None:
                continue
            name = MARKET if body.scope == "market" else _scope_key(event.venue, event.symbol)
            cascade = _Open(event.thread, body, event.revision, event.venue, event.symbol, written_at=now)
            growth = [h for e in (later or {}).get(event.thread, ()) if (h := _hit(e)) is not None]
            growth = [h for h in growth if name == MARKET or _scope_key(h.venue, h.symbol) == name]
            if growth:
                cascade.body = _grown(body, growth)
                cascade.written_at, cascade.pending = now - self.settings.revision_every, True
            self._scopes.setdefault(name, _Scope()).open = cascade

    # --- events -----------------------------------------------------------------------------------------
    def _revision(self, cascade: _Open) -> Event:
        return Event(
            key=f"{cascade.thread}:{cascade.revision}",
            topic=Topic.CASCADE,
            source=SOURCE,
            venue=cascade.venue,
            symbol=cascade.symbol,
            usd=cascade.body.usd,
            occurred_at=cascade.body.last_at,
            body=cascade.body,
            thread=cascade.thread,
            revision=cascade.revision,
        )


async def resume(detector: CascadeDetector, history: History, now: datetime, *, tick: timedelta) -> None:
    """Windows and open cascades back from the log at start. Growth no revision stated yet can only have
    been stored within one throttle period (and a tick) of the newest revision: the next commit or tick
    after it would have written it."""
    window = detector.settings.window
    recent = await history.since(Topic.LIQUIDATION.value, occurred_after=now - window)
    open_ones = [
        e
        for e in await history.newest_revisions(Topic.CASCADE.value, accepted_after=now - timedelta(days=1))
        if e.thread is not None and isinstance(e.body, CascadeBody) and not e.body.closed
    ]
    within = detector.settings.revision_every + 2 * tick
    later = {
        str(e.thread): await history.accepted_after(Topic.LIQUIDATION.value, e.key, within=within) for e in open_ones
    }
    detector.load(recent, open_ones, now, later=later)


def _hit(event: Event) -> _Hit | None:
    body = event.body
    if event.topic is not Topic.LIQUIDATION or not isinstance(body, LiquidationBody) or body.cause != "liquidation":
        return None  # an ADL closes a winner against a bankrupt position: not one more liquidation
    if event.venue is None or event.symbol is None:
        return None
    return _Hit(
        key=event.key,
        at=event.occurred_at,
        usd=body.notional_usd,
        side=body.side,
        venue=event.venue,
        symbol=event.symbol,
        sampled=body.sampled,
    )


def _opened(name: str, hits: list[_Hit], window: timedelta, now: datetime) -> _Open:
    first = min(hits, key=lambda h: h.at)
    market = name == MARKET
    seed = CascadeBody.model_construct(  # no members yet: `_grown` validates the body it makes
        scope="market" if market else "symbol",
        count=0,
        usd=Decimal(0),
        long_count=0,
        long_usd=Decimal(0),
        short_count=0,
        short_usd=Decimal(0),
        largest_usd=Decimal(-1),
        largest_symbol=first.symbol,
        largest_venue=first.venue,
        largest_side=first.side,
        venues=(),
        sampled_venues=(),
        started_at=first.at,
        last_at=first.at,
        window_s=int(window.total_seconds()),
        closed=False,
    )
    body = _grown(seed, hits)
    return _Open(
        thread=f"cascade:{name}:{int(first.at.timestamp() * 1000)}",
        body=body,
        revision=2 * body.count,
        venue=None if market else first.venue,
        symbol=None if market else first.symbol,
        written_at=now,
    )


def _grown(body: CascadeBody, hits: Sequence[_Hit]) -> CascadeBody:
    count, usd = body.count, body.usd
    long_count, long_usd, short_count, short_usd = body.long_count, body.long_usd, body.short_count, body.short_usd
    largest = (body.largest_usd, body.largest_symbol, body.largest_venue, body.largest_side)
    venues, sampled = set(body.venues), set(body.sampled_venues)
    last = body.last_at
    for hit in hits:
        count += 1
        usd += hit.usd
        if hit.side is PositionSide.LONG:
            long_count, long_usd = long_count + 1, long_usd + hit.usd
        else:
            short_count, short_usd = short_count + 1, short_usd + hit.usd
        if hit.usd > largest[0]:
            largest = (hit.usd, hit.symbol, hit.venue, hit.side)
        venues.add(hit.venue)
        if hit.sampled:
            sampled.add(hit.venue)
        last = max(last, hit.at)
    order = list(Venue)
    return CascadeBody(
        **{
            **body.model_dump(),
            "count": count,
            "usd": usd,
            "long_count": long_count,
            "long_usd": long_usd,
            "short_count": short_count,
            "short_usd": short_usd,
            "largest_usd": largest[0],
            "largest_symbol": largest[1],
            "largest_venue": largest[2],
            "largest_side": largest[3],
            "venues": tuple(sorted(venues, key=order.index)),
            "sampled_venues": tuple(sorted(sampled, key=order.index)),
            "last_at": last,
        }
    )
