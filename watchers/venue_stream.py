"""A venue whose liquidations come over topic subscriptions, wired from its pure parser module.

Bybit, OKX, Lighter, Pacifica and Hyperliquid all work the same way: a REST call lists the markets, the
markets become topics, the topics are spread over a pool of connections under the venue's caps, and each
frame is parsed against the markets as last fetched. A venue module declares that with one `VenueStream`
(its parser functions, its caps and heartbeat, its reference request); this module runs it on the watcher
runtime, so the module itself stays pure and tested on frames.

A frame that names a market the reference data does not know yet asks for a refresh (rate limited by the
reference data) and is counted as refused, never guessed; the next refresh subscribes the new market
without a restart, on the live connections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from perpwatch.events import Event, Topic, Venue
from watchers.base import EventSink, Watcher
from watchers.instruments import UnknownInstrument
from watchers.pool import Consumer, FanOut, TopicProtocol, WsPool
from watchers.refdata import Change, RefSource
from watchers.runtime import WatcherContext
from watchers.ws import Heartbeat, WsSettings, WsTuning

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class VenueStream(Generic[R]):
    """Everything that differs between topic venues; the venue module's own functions."""

    venue: Venue
    reference: Callable[[str], RefSource[R]]
    """The markets' REST request and parser, given the REST URL setting's value."""
    topics_for: Callable[[R], list[str]]
    subscribe_frames: Callable[[Sequence[str]], list[str]]
    per_frame: int
    per_connection: int
    heartbeat: Heartbeat
    is_control: Callable[[Any], bool]
    parse_frame: Callable[[Any, R], list[Event]]
    budget_per_min: int
    """The venue's REST allowance for this host, per minute, as its docs give it."""
    plain_texts: frozenset[str] = frozenset()
    """Non-JSON control texts (OKX's `pong`)."""
    reply: Callable[[Any], str | None] | None = None
    """Answers to app-level server pings, where the venue sends them."""


class VenueSettings(WsSettings, Protocol):
    """What a topic venue reads besides its two URLs (which the registry passes in)."""


class TopicVenueWatcher(Watcher, Generic[R]):
    def __init__(
        self,
        spec: VenueStream[R],
        ws_url: str,
        rest_url: str,
        tuning: WsTuning,
        ctx: WatcherContext,
        *,
        name: str | None = None,
        parse: bool = True,
    ) -> None:
        """`parse=False`: the connection only feeds consumers added with `add_consumer` (a whale watcher
        that needs the venue's trades while this venue's liquidation watcher is not running)."""
        super().__init__(name or spec.venue.value, frozenset({(Topic.LIQUIDATION, spec.venue)}), clock=ctx.clock)
        self.spec = spec
        self._consumers: list[Consumer] = [Consumer(spec.venue.value, self._handle)] if parse else []
        self._fanout: FanOut | None = None
        self.budget = ctx.budgets.declare(rest_url, spec.budget_per_min)
        self.markets = ctx.refdata.get(spec.reference(rest_url))
        protocol = TopicProtocol(
            subscribe=lambda chunk: spec.subscribe_frames(chunk)[0],
            per_connection=spec.per_connection,
            per_frame=spec.per_frame,
        )
        self.pool = WsPool(
            label=spec.venue.value,
            url=ws_url,
            handler=self._frame,
            health=self.health,
            tuning=tuning,
            protocol=protocol,
            heartbeat=spec.heartbeat,
            reply=spec.reply,
            plain_texts=spec.plain_texts,
            session=ctx.session,
            clock=ctx.clock,
        )
        self.markets.listen(self._markets_changed)

    def _markets_changed(self, value: R, _change: Change) -> None:
        self.pool.set_topics(self.spec.topics_for(value))
        self._show_reference()

    def _show_reference(self) -> None:
        """`/status` shows where the markets came from and the REST budget beside the stream's figures."""
        self.health.extra["markets"] = self.markets.status()
        self.health.extra["rest budget"] = self.budget.describe()

    def add_consumer(self, consumer: Consumer) -> None:
        """Another reader of this connection's frames (Hyperliquid's trades feed whale fills too): each
        consumer's errors are its own, counted and logged without costing the others their events."""
        self._consumers.append(consumer)
        self._fanout = FanOut(self._consumers, self.health)

    def _frame(self, frame: Any) -> list[Event]:
        if self._fanout is None:  # the venue's own parser alone: its errors are the stream's
            return self._handle(frame) if self._consumers else []
        return self._fanout(frame)

    def _handle(self, frame: Any) -> list[Event]:
        if self.spec.is_control(frame):
            return []
        markets = self.markets.value
        if markets is None:  # frames before the first markets: the pool subscribes only after `ready`
            raise ValueError("a frame before the markets were known")
        try:
            return self.spec.parse_frame(frame, markets)
        except UnknownInstrument as exc:
            self.markets.require(str(exc.name))  # refuses the frame (unknown_symbol) and asks for a refresh
            raise

    async def run(self, sink: EventSink) -> None:
        async with self.markets.use():
            self.pool.set_topics(self.spec.topics_for(await self.markets.ready()))
            self._show_reference()
            await self.pool.run(sink)
