"""One watched Hyperliquid wallet's book: what we believe it holds, and the alerts a change makes.

Pure: the watcher (`watchers.hyperliquid_whales`) feeds it the wallet's public trades as they stream and
its `clearinghouseState` snapshots as the reconcile poll fetches them, and persists `to_json()`.

The snapshot is the truth; trades are the news. So:

- **Seeding.** The first snapshot of a wallet only records what it holds: an add to a position it already
  had is an *increase*, never an open.
- **Trades.** A trade at or before the newest snapshot of its coin is already in that snapshot, and a trade
  id seen before is a replay (the stream replays recent trades on every subscribe): neither moves the
  book, so a reconnect or a restart never reports a fill twice. Fills of one order in one frame are one
  alert (`hl_account.group_by_order`).
- **A reduction or close near liquidation is held, not told.** The public trades carry no liquidation flag,
  and a wallet liquidated into the book looks like one that sold. Such a change waits for the next
  reconcile, which reads the wallet's own fills (and, if needed, its ledger): a fill naming the wallet as
  `liquidatedUser` or a ledger `liquidation` confirms a liquidation; otherwise the held change is told as
  the trade it was. An ADL'd fill is the wallet's position closed against a bankrupt one: told as ADL.
- **Snapshots tell what trades did not.** A size the trades did not explain (a fill missed while the bot
  was down or the socket away) is told once per coin, marked as seen in a snapshot, so a restart reports
  what changed while it was down once, not as a flood. A position that vanished is checked against fills
  and ledger before anything is said.
- **Distance.** Each snapshot's mark (`positionValue / |szi|`) and liquidation price give the distance; the
  hysteresis alarm (`hl_account.DistanceAlarm`) warns once per crossing, on one thread per wallet and coin
  so a platform that can edit updates the warning in place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from perpwatch.accounts import DISTANCE_STEPS, AccountView, PositionView
from perpwatch.events import DistanceBody, Event, LiquidationBody, PositionBody, PositionSide, Topic, Venue
from watchers.hl_account import (
    AccountSnapshot,
    ChangeKind,
    DistanceAlarm,
    Fill,
    LedgerUpdate,
    LiquidationFacts,
    OrderFills,
    WalletTrade,
    classify,
    distance,
    group_by_order,
    liquidation_of,
)

DISTANCE_LADDER = tuple(Decimal(p) / 100 for p in DISTANCE_STEPS)
"""Each step crossed is an alert of its own on the wallet and coin's thread, delivered only to the chats
that chose that step (`/distance`)."""
SOURCE = "hyperliquid_whales"
STALE_BOOK_MS = 7 * 86_400_000
"""A stored book older than this (the bot was down for a week, or the wallet left every watch list while it
was down) is not compared with: "what changed while it was down" would be news from long ago."""
SEEN_KEPT = 2000
"""Trade ids remembered per wallet: more than the stream replays on a subscribe."""
EXPLORER = "https://app.hyperliquid.xyz/explorer/address/"
"""Hyperliquid's official explorer (app.hyperliquid.xyz/explorer), an address's page under `address/`."""
HL_LINK = EXPLORER + "{address}"
"""The default `WalletBook.link`: a template with `{address}`."""


def _dex_of(coin: str) -> str:
    return coin.split(":", 1)[0] if ":" in coin else ""


@dataclass(slots=True)
class Holding:
    size: Decimal
    """Signed: + long, − short."""
    entry_px: Decimal | None = None
    leverage: int | None = None
    liquidation_px: Decimal | None = None
    alarm: DistanceAlarm = field(default_factory=lambda: DistanceAlarm.new(DISTANCE_LADDER))
    warnings: int = 0
    """Distance revisions told so far on this coin's thread."""

    def to_json(self) -> dict[str, Any]:
        return {
            "size": str(self.size),
            "entry_px": None if self.entry_px is None else str(self.entry_px),
            "leverage": self.leverage,
            "liquidation_px": None if self.liquidation_px is None else str(self.liquidation_px),
            "alarm": self.alarm.to_dict(),
            "warnings": self.warnings,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Holding:
        def dec(value: object) -> Decimal | None:
            return None if value is None else Decimal(str(value))

        return cls(
            size=Decimal(str(data["size"])),
            entry_px=dec(data.get("entry_px")),
            leverage=data.get("leverage"),
            liquidation_px=dec(data.get("liquidation_px")),
            alarm=DistanceAlarm.from_dict(data["alarm"]) if data.get("alarm") else DistanceAlarm.new(DISTANCE_LADDER),
            warnings=int(data.get("warnings", 0)),
        )

    @property
    def endangered(self) -> bool:
        """Some warning threshold has been crossed and not yet re-armed: a close now may be a liquidation."""
        return self.alarm.armed != frozenset(self.alarm.thresholds)


@dataclass(slots=True)
class HeldChange:
    """A reduction or close told only once fills or the ledger say whether it was a liquidation."""

    event: Event
    coin: str
    since_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"event": self.event.model_dump(mode="json"), "coin": self.coin, "since_ms": self.since_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeldChange:
        return cls(Event.model_validate(data["event"]), str(data["coin"]), int(data["since_ms"]))


@dataclass(slots=True)
class WalletBook:
    wallet: str
    venue: Venue = Venue.HYPERLIQUID
    """Every alert's venue. A book of another venue is fed snapshots only (`watchers.account_poller`)."""
    link: str | None = HL_LINK
    """The wallet's page, a template with `{address}`; None where the venue has no page we know of."""
    source: str = SOURCE
    position_note: str | None = None
    """Said on every position alert of this book (a venue that publishes no liquidation price says so)."""
    holdings: dict[str, Holding] = field(default_factory=dict)
    as_of_ms: dict[str, int] = field(default_factory=dict)
    """Per dex (`""` the main one): the newest snapshot's time. Trades up to it are in the snapshot."""
    seen: deque[str] = field(default_factory=lambda: deque(maxlen=SEEN_KEPT))
    held: list[HeldChange] = field(default_factory=list)
    applied: list[tuple[str, int, str]] = field(default_factory=list)
    """Trades applied since the newest snapshot of their dex (coin, time, signed size): a snapshot older
    than them must not undo them."""
    seeded: bool = False
    checked_ms: int | None = None
    """When the last complete reconcile (every dex) was fetched: where the next fills query starts."""

    # --- persistence -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "holdings": {coin: h.to_json() for coin, h in self.holdings.items()},
            "as_of_ms": self.as_of_ms,
            "seen": list(self.seen),
            "held": [h.to_json() for h in self.held],
            "applied": [list(a) for a in self.applied],
            "seeded": self.seeded,
            "checked_ms": self.checked_ms,
        }

    @classmethod
    def from_json(cls, wallet: str, data: dict[str, Any], **venue: Any) -> WalletBook:
        """`venue`: the constructor's venue, link, source and position_note (not persisted: code, not state)."""
        return cls(
            wallet=wallet,
            **venue,
            holdings={str(c): Holding.from_json(h) for c, h in data.get("holdings", {}).items()},
            as_of_ms={str(d): int(t) for d, t in data.get("as_of_ms", {}).items()},
            seen=deque((str(s) for s in data.get("seen", [])), maxlen=SEEN_KEPT),
            held=[HeldChange.from_json(h) for h in data.get("held", [])],
            applied=[(str(c), int(t), str(z)) for c, t, z in data.get("applied", [])],
            seeded=bool(data.get("seeded", False)),
            checked_ms=data.get("checked_ms"),
        )

    @property
    def _prefix(self) -> str:
        """Alert keys and threads: `hl:` for Hyperliquid as before, the venue's name for the others (one 0x
        address may hold positions on Hyperliquid and Lighter; their alerts must not share a key)."""
        return "hl" if self.venue is Venue.HYPERLIQUID else self.venue.value

    @property
    def _link(self) -> str | None:
        return None if self.link is None else self.link.format(address=self.wallet)

    def stale(self, now_ms: int) -> bool:
        """Too old to compare a snapshot with (`STALE_BOOK_MS`): the watcher seeds it afresh instead."""
        return self.checked_ms is None or now_ms - self.checked_ms > STALE_BOOK_MS

    # --- what the poll should do next ----------------------------------------------------------------
    @property
    def endangered(self) -> bool:
        """Polled more often: a position with a crossed warning, or a change held for confirmation."""
        return bool(self.held) or any(h.endangered for h in self.holdings.values())

    # --- trades ------------------------------------------------------------------------------------------
    def on_trades(self, trades: Sequence[WalletTrade]) -> list[Event]:
        """This wallet's trades of one frame: one alert per order, held back where it may be a liquidation."""
        if not self.seeded:
            return []  # the seeding snapshot will hold whatever these did
        fresh = [t for t in trades if self._fresh(t)]
        for t in fresh:
            self.seen.append(_trade_id(t.coin, t.tid))
            self.applied.append((t.coin, t.time_ms, str(t.signed_size)))
        events: list[Event] = []
        for order in group_by_order((self.wallet, t) for t in fresh):
            event = self._apply_order(order)
            if event is not None:
                events.append(event)
        return events

    def _fresh(self, trade: WalletTrade) -> bool:
        if _trade_id(trade.coin, trade.tid) in self.seen:
            return False
        return trade.time_ms > self.as_of_ms.get(_dex_of(trade.coin), -1)

    def _apply_order(self, order: OrderFills) -> Event | None:
        holding = self.holdings.get(order.coin)
        before = holding.size if holding is not None else Decimal(0)
        after = before + order.signed_size
        change = classify(before, after)
        if change.kind is ChangeKind.UNCHANGED:
            return None
        endangered = holding is not None and holding.endangered
        entry = holding.entry_px if holding is not None else None
        if change.kind in (ChangeKind.OPENED, ChangeKind.FLIPPED):
            entry = order.vwap_px
        elif change.kind is ChangeKind.INCREASED and entry is not None:
            entry = (entry * abs(before) + order.vwap_px * order.size) / abs(after)
        if after == 0:
            self.holdings.pop(order.coin, None)
        elif holding is None or change.kind is ChangeKind.FLIPPED:
            self.holdings[order.coin] = Holding(size=after, entry_px=entry)
        else:
            holding.size, holding.entry_px = after, entry
        tids = sorted(f.tid for f in order.fills)
        event = self._position_event(
            key=f"{self._prefix}:pos:{self.wallet}:{order.coin}:{tids[0]}:{tids[-1]}",
            coin=order.coin,
            change=change.kind,
            before=before,
            after=after,
            at=order.last_at,
            notional=order.notional_usd,
            price=order.vwap_px,
            entry=holding.entry_px if holding is not None and change.kind is ChangeKind.REDUCED else entry,
            leverage=holding.leverage if holding is not None and change.kind is not ChangeKind.FLIPPED else None,
            seen_by="fills",
        )
        if endangered and change.kind in (ChangeKind.REDUCED, ChangeKind.CLOSED, ChangeKind.FLIPPED):
            self.held.append(HeldChange(event, order.coin, min(int(f.time_ms) for f in order.fills)))
            return None
        return event

    # --- snapshots ----------------------------------------------------------------------------------------
    def vanished(self, snapshots: Iterable[AccountSnapshot]) -> bool:
        """Whether these snapshots need the wallet's fills before they can be told: a position is smaller or
        gone without trades to explain it, or a change is held for confirmation."""
        if self.held:
            return True
        if not self.seeded:
            return False
        sizes = {coin: size for snap in snapshots for coin, size in snap.sizes().items()}
        dexes = {snap.dex for snap in snapshots}
        for coin, holding in self.holdings.items():
            if _dex_of(coin) in dexes and abs(sizes.get(coin, Decimal(0))) < abs(holding.size):
                return True
        return False

    def on_snapshots(
        self,
        snapshots: Sequence[AccountSnapshot],
        *,
        fills: Sequence[Fill] = (),
        ledger: Sequence[LedgerUpdate] = (),
    ) -> list[Event]:
        """A reconcile: the snapshots of some or all of the wallet's dexes, with its fills and ledger since
        the last reconcile where `vanished` asked for them."""
        since = self.checked_ms if self.checked_ms is not None else -1
        events = self._confirmed([f for f in fills if f.time_ms > since], ledger)
        liquidated = {e.symbol for e in events if isinstance(e.body, LiquidationBody)}
        for snap in snapshots:
            events += self._reconcile(snap, liquidated)
            self.as_of_ms[snap.dex] = int(snap.at.timestamp() * 1000)
        still_held: list[HeldChange] = []
        for change in self.held:  # no liquidation found for it: it was the trade it looked like
            if change.coin not in liquidated:
                events.append(change.event)
        self.held = still_held
        if snapshots:
            self.seeded = True
        return events

    def reconciled(self, at_ms: int) -> None:
        """Every dex was fetched: the next fills query starts here."""
        self.checked_ms = at_ms

    def _confirmed(self, fills: Sequence[Fill], ledger: Sequence[LedgerUpdate]) -> list[Event]:
        """Liquidations and ADLs of this wallet named by its own fills (one event per order) or, failing a
        fill, by a ledger `liquidation` entry."""
        orders: dict[tuple[str, str, int], list[LiquidationFacts]] = {}
        for fill in fills:
            facts = liquidation_of(self.wallet, fill)
            if facts is not None:
                order = facts.oid if facts.oid is not None else facts.tid
                orders.setdefault((facts.coin, facts.cause, order), []).append(facts)
        events: list[Event] = []
        for (coin, cause, _), parts in orders.items():
            size = sum((x.size for x in parts), Decimal(0))
            notional = sum((x.notional_usd for x in parts), Decimal(0))
            events.append(
                self._liquidation_event(
                    key=f"hl:{cause}:{self.wallet}:{coin}:{min(x.tid for x in parts)}",
                    coin=coin,
                    side=parts[0].side,
                    size=size,
                    price=notional / size,
                    notional=notional,
                    at=max(x.at for x in parts),
                    cause=parts[0].cause,
                    method=parts[0].method,
                )
            )
        told = {coin for coin, _, _ in orders}
        for update in ledger:
            if update.liquidation is None:
                continue
            for position in update.liquidation.positions:
                holding = self.holdings.get(position.coin)
                px = holding.liquidation_px if holding is not None else None
                if position.coin in told or px is None:
                    continue  # told from fills, or no price to value it at: nothing is invented
                told.add(position.coin)
                size = abs(position.size)
                events.append(
                    self._liquidation_event(
                        key=f"hl:liquidation:{self.wallet}:{position.coin}:ledger:{update.hash}",
                        coin=position.coin,
                        side=position.side,
                        size=size,
                        price=px,
                        notional=size * px,
                        at=update.at,
                        cause="liquidation",
                        method=None,
                        note="From the ledger, which gives no fill price: valued at the liquidation price last seen.",
                    )
                )
        self.held = [h for h in self.held if h.coin not in told]
        return events

    def _reconcile(self, snap: AccountSnapshot, liquidated: set[str | None]) -> list[Event]:
        events: list[Event] = []
        now_ms = int(snap.at.timestamp() * 1000)
        present = {p.coin: p for p in snap.positions}
        # Trades already applied that the snapshot is too old to include stay applied on top of it.
        later: dict[str, Decimal] = {}
        for coin, time_ms, size in self.applied:
            if _dex_of(coin) == snap.dex and time_ms > now_ms:
                later[coin] = later.get(coin, Decimal(0)) + Decimal(size)
        self.applied = [a for a in self.applied if _dex_of(a[0]) != snap.dex or a[1] > now_ms]
        coins = set(present) | {c for c in self.holdings if _dex_of(c) == snap.dex}
        for coin in sorted(coins):
            position = present.get(coin)
            holding = self.holdings.get(coin)
            after = position.size if position is not None else Decimal(0)
            before = (holding.size if holding is not None else Decimal(0)) - later.get(coin, Decimal(0))
            change = classify(before, after)
            held = any(h.coin == coin for h in self.held)
            if self.seeded and change.kind is not ChangeKind.UNCHANGED and coin not in liquidated and not held:
                entry = holding.entry_px if holding is not None else None
                value = position.position_value_usd if position is not None else abs(before) * (entry or Decimal(0))
                events.append(
                    self._position_event(
                        key=f"{self._prefix}:pos:{self.wallet}:{coin}:snap:{now_ms}",
                        coin=coin,
                        change=change.kind,
                        before=before,
                        after=after,
                        at=snap.at,
                        notional=value,
                        price=None,
                        entry=position.entry_px if position is not None else None,
                        leverage=position.leverage.value
                        if position is not None and position.leverage is not None
                        else None,
                        seen_by="snapshot",
                    )
                )
            if position is None:
                if coin not in later:
                    self.holdings.pop(coin, None)
                continue
            if holding is None or change.kind is ChangeKind.FLIPPED:
                holding = self.holdings[coin] = Holding(size=after)
            holding.size = after + later.get(coin, Decimal(0))
            holding.entry_px = position.entry_px
            holding.leverage = position.leverage.value if position.leverage is not None else None
            holding.liquidation_px = position.liquidation_px
            mark = position.position_value_usd / abs(position.size)
            gap = distance(position, mark) if mark > 0 else None
            holding.alarm, crossed = holding.alarm.crossings(gap)
            if gap is None or position.liquidation_px is None or not self.seeded:
                continue
            for threshold in crossed:  # one revision per step: each chat hears the steps it chose (`level`)
                holding.warnings += 1
                events.append(
                    Event(
                        key=f"{self._prefix}:dist:{self.wallet}:{coin}:{holding.warnings}",
                        topic=Topic.WHALE,
                        source=self.source,
                        venue=self.venue,
                        symbol=coin,
                        usd=position.position_value_usd,
                        occurred_at=snap.at,
                        subject=self.wallet,
                        thread=f"{self._prefix}:dist:{self.wallet}:{coin}",
                        revision=holding.warnings,
                        link=self._link,
                        body=DistanceBody(
                            wallet=self.wallet,
                            coin=coin,
                            side=position.side,
                            size=abs(position.size),
                            notional_usd=position.position_value_usd,
                            mark_px=mark,
                            liquidation_px=position.liquidation_px,
                            distance=gap,
                            threshold=threshold,
                        ),
                    )
                )
        return events

    # --- events ---------------------------------------------------------------------------------------------
    def _position_event(
        self,
        *,
        key: str,
        coin: str,
        change: ChangeKind,
        before: Decimal,
        after: Decimal,
        at: datetime,
        notional: Decimal,
        price: Decimal | None,
        entry: Decimal | None,
        leverage: int | None,
        seen_by: Literal["fills", "snapshot"],
    ) -> Event:
        def side(size: Decimal) -> PositionSide | None:
            return None if size == 0 else PositionSide.LONG if size > 0 else PositionSide.SHORT

        return Event(
            key=key,
            topic=Topic.WHALE,
            source=self.source,
            venue=self.venue,
            symbol=coin,
            usd=notional,
            occurred_at=at,
            subject=self.wallet,
            link=self._link,
            body=PositionBody(
                wallet=self.wallet,
                coin=coin,
                change=change.value,  # UNCHANGED is never told
                side_before=side(before),
                side_after=side(after),
                size_before=abs(before),
                size_after=abs(after),
                price=price,
                notional_usd=notional,
                entry_px=entry,
                leverage=leverage,
                seen_by=seen_by,
                note=self.position_note,
            ),
        )

    def _liquidation_event(
        self,
        *,
        key: str,
        coin: str,
        side: PositionSide,
        size: Decimal,
        price: Decimal,
        notional: Decimal,
        at: datetime,
        cause: Literal["liquidation", "adl"],
        method: Literal["market", "backstop"] | None,
        note: str | None = None,
    ) -> Event:
        return Event(
            key=key,
            topic=Topic.WHALE,
            source=self.source,
            venue=self.venue,
            symbol=coin,
            usd=notional,
            occurred_at=at,
            subject=self.wallet,
            link=self._link,
            body=LiquidationBody(
                side=side,
                size=size,
                price=price,
                notional_usd=notional,
                account=self.wallet,
                cause=cause,
                method=method,
                note=note,
            ),
        )


def _trade_id(coin: str, tid: int) -> str:
    return f"{coin}:{tid}"


def account_view(address: str, venue: Venue, snapshots: Sequence[AccountSnapshot]) -> AccountView:
    """What `/whale` shows of snapshots. A mark is `positionValue / |size|` only where the venue values the
    position at its mark (it then gives an unrealised PnL too); elsewhere (Pacifica) none is shown."""
    positions = []
    for snap in snapshots:
        for p in snap.positions:
            marked = p.unrealized_pnl_usd is not None
            mark = p.position_value_usd / abs(p.size) if marked else None
            lev = f"{p.leverage.value}x {p.leverage.type}" if p.leverage is not None else "leverage not given"
            positions.append(
                PositionView(
                    coin=p.coin,
                    side=p.side,
                    size=abs(p.size),
                    notional_usd=p.position_value_usd,
                    entry_px=p.entry_px,
                    mark_px=mark,
                    unrealized_pnl_usd=p.unrealized_pnl_usd,
                    leverage=lev,
                    liquidation_px=p.liquidation_px,
                    distance=distance(p, mark) if mark is not None and mark > 0 else None,
                )
            )
    positions.sort(key=lambda v: v.notional_usd, reverse=True)
    values = [s.account_value_usd for s in snapshots]
    return AccountView(
        address=address,
        venue=venue.value,
        at=max(s.at for s in snapshots),
        account_value_usd=None
        if all(v is None for v in values)
        else sum((v or Decimal(0) for v in values), Decimal(0)),
        positions=tuple(positions),
    )


def stored(book: WalletBook, pending: Sequence[Event]) -> dict[str, Any]:
    """What a watcher keeps of a book: the book, with the alerts it made that the pipeline has not taken
    yet (saved before they are handed over, so a crash between the two re-sends them, never loses them)."""
    data = book.to_json()
    data["pending"] = [e.model_dump(mode="json") for e in pending]
    return data


def pending_in(data: dict[str, Any]) -> list[Event]:
    """The alerts a stored book was saved with: handed over again at start (their keys make that harmless)."""
    return [Event.model_validate(e) for e in data.get("pending", [])]
