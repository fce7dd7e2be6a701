"""Prometheus metrics, read at scrape time from the objects that already keep the figures.

Watchers keep their health, the pipeline and the dispatcher their counts, each host its request budget:
a custom collector turns those into samples when Prometheus asks, so nothing on the hot path pays for
metrics it did not already keep. Only the frame-to-send latency has no figure of its own, so it is a
histogram the dispatcher feeds through its `sent_listeners`.

The registry is our own, not prometheus-client's global one: two bots in one test process (or a library
that registers its own metrics globally) must not mix their series or collide on a name.

The backlog per platform is the one figure that needs the database. It is counted off the loop's thread
(`StatusReads`) before the registry is rendered, and a scrape that finds storage away serves the last
count with `perpwatch_backlog_age_seconds` saying how old it is, rather than failing the whole scrape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bot.dispatch.dispatcher import Dispatcher
from bot.pipeline import Pipeline
from bot.supervisor import Supervisor
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Event
from storage.status import PlatformBacklog, StatusReads
from watchers.base import WatcherState
from watchers.poller import BudgetRegistry

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
"""Around the dispatcher's promise (an alert in a message within a few seconds) and out to quiet hours' and
a flood ban's hours, so both a healthy day and a bad one read off the same buckets."""

BACKLOG_MAX_AGE_S = 5.0
"""A scrape reuses a backlog count this young: counting visits every waiting row."""

BACKLOG_TIMEOUT_S = 2.0
"""A scrape waits this long for the count, then serves the last one: well inside Prometheus' default scrape
timeout, so a slow count costs one stale figure, never the whole scrape."""

UP_STATES = (WatcherState.UP, WatcherState.DEGRADED)
"""States in which a watcher delivers (a degraded pool still streams on its other connections)."""


class BotMetrics:
    """The registry `/metrics` renders, the latency histogram, and the collector over the live objects."""

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        dispatcher: Dispatcher,
        supervisor: Supervisor,
        budgets: BudgetRegistry,
        reads: StatusReads,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.pipeline = pipeline
        self.dispatcher = dispatcher
        self.supervisor = supervisor
        self.budgets = budgets
        self.reads = reads
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            "perpwatch_frame_to_send_seconds",
            "From when an event occurred (or fell due) to when the platform accepted its message.",
            ["platform"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.backlog: list[PlatformBacklog] = []
        self.backlog_at: float | None = None
        self.registry.register(_Live(self))
        dispatcher.sent_listeners.append(self.observe_sent)

    def observe_sent(self, platform: str, events: Sequence[Event], sent_at: datetime) -> None:
        """Each alert's wait: a summary carries as many waits as it merged alerts, the oldest the one that matters."""
        child = self.latency.labels(platform=platform)
        for event in events:
            start = event.due_at or event.occurred_at
            child.observe(max((sent_at - start).total_seconds(), 0.0))

    async def refresh_backlog(self) -> None:
        """Count the backlog off the loop, within `BACKLOG_TIMEOUT_S`; on failure keep the last count."""
        try:
            self.backlog = await asyncio.wait_for(
                self.reads.backlog_by_platform(max_age_s=BACKLOG_MAX_AGE_S), BACKLOG_TIMEOUT_S
            )
            self.backlog_at = self.clock.monotonic()
        except (TimeoutError, Exception) as exc:
            log.debug("backlog count for metrics failed; serving the last one error=%s", type(exc).__name__)

    async def render(self) -> bytes:
        await self.refresh_backlog()
        return generate_latest(self.registry)


class _Live(Collector):
    """Samples made from the live objects at each scrape: a handful per watcher, host and platform, never per
    chat or per event, so rendering stays short whatever the bot's size."""

    def __init__(self, metrics: BotMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.m
        yield from self._events(m.pipeline)
        yield from self._deliveries(m.dispatcher)
        yield from self._backlog()
        yield from self._watchers(m.supervisor)
        yield from self._budgets(m.budgets)

    def _events(self, pipeline: Pipeline) -> Iterable[Metric]:
        events = CounterMetricFamily(
            "perpwatch_events", "Events handed to the pipeline, by source and result.", labels=["source", "result"]
        )
        for (source, new), count in sorted(pipeline.stats.by_source.items()):
            events.add_metric([source, "accepted" if new else "duplicate"], count)
        yield events

    def _deliveries(self, dispatcher: Dispatcher) -> Iterable[Metric]:
        stats = dispatcher.stats
        platforms = sorted(dispatcher.platforms)
        deliveries = CounterMetricFamily(
            "perpwatch_deliveries",
            "Alert rows that reached a final state in this process, by platform and state.",
            labels=["platform", "state"],
        )
        seen = dict(stats.outcomes)
        for platform in platforms:
            for state in ("sent", "parked", "expired"):
                seen.setdefault((platform, state), 0)
        for (platform, state), count in sorted(seen.items()):
            deliveries.add_metric([platform or "unknown", state], count)
        yield deliveries
        limited = CounterMetricFamily(
            "perpwatch_rate_limited", "429 answers from a chat platform.", labels=["platform"]
        )
        held = CounterMetricFamily(
            "perpwatch_rate_limited_hold_seconds",
            "Seconds of holds the chat platforms' 429s asked for (summed over chats).",
            labels=["platform"],
        )
        for platform in platforms:
            limited.add_metric([platform], stats.rate_limited_by.get(platform, 0))
            held.add_metric([platform], stats.held_s_by.get(platform, 0.0))
        yield limited
        yield held
        disabled = GaugeMetricFamily(
            "perpwatch_platform_sending",
            "1 while a platform is sent to, 0 once it refused the token.",
            labels=["platform"],
        )
        for platform in platforms:
            disabled.add_metric([platform], 0 if platform in dispatcher.disabled else 1)
        yield disabled
        yield GaugeMetricFamily(
            "perpwatch_storage_paused",
            "1 while sending is paused because the outbox cannot be written.",
            value=1 if dispatcher.outage.paused() else 0,
        )

    def _backlog(self) -> Iterable[Metric]:
        m = self.m
        pending = GaugeMetricFamily("perpwatch_backlog", "Deliveries due now and not yet sent.", labels=["platform"])
        parked = GaugeMetricFamily("perpwatch_parked", "Deliveries given up on (kept).", labels=["platform"])
        counted = {b.platform: b for b in m.backlog}
        for platform in sorted(set(m.dispatcher.platforms) | set(counted)):
            row = counted.get(platform)
            pending.add_metric([platform], row.pending if row else 0)
            parked.add_metric([platform], row.parked if row else 0)
        yield pending
        yield parked
        if m.backlog_at is not None:
            yield GaugeMetricFamily(
                "perpwatch_backlog_age_seconds",
                "How old the backlog count served is (it is reused briefly, and kept while storage is away).",
                value=max(m.clock.monotonic() - m.backlog_at, 0.0),
            )

    def _watchers(self, supervisor: Supervisor) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "perpwatch_watcher_up", "1 while a watcher is up (or degraded), else 0.", labels=["watcher"]
        )
        state = GaugeMetricFamily(
            "perpwatch_watcher_state", "A watcher's state, one series per state set to 1.", labels=["watcher", "state"]
        )
        reconnects = CounterMetricFamily("perpwatch_watcher_reconnects", "Reconnects.", labels=["watcher"])
        parse_errors = CounterMetricFamily(
            "perpwatch_watcher_parse_errors", "Frames or lines that could not be read.", labels=["watcher"]
        )
        errors = CounterMetricFamily("perpwatch_watcher_errors", "Connection or poll failures.", labels=["watcher"])
        events = CounterMetricFamily("perpwatch_watcher_events", "Events a watcher produced.", labels=["watcher"])
        rejected = CounterMetricFamily(
            "perpwatch_watcher_rejected", "Events refused, by reason.", labels=["watcher", "reason"]
        )
        for health in supervisor.health():
            name = health.name
            up.add_metric([name], 1 if health.state in UP_STATES else 0)
            for s in WatcherState:
                state.add_metric([name, s.value], 1 if health.state is s else 0)
            reconnects.add_metric([name], health.reconnects)
            parse_errors.add_metric([name], health.parse_errors)
            errors.add_metric([name], health.errors)
            events.add_metric([name], health.events)
            for reason, count in sorted(health.rejected.items()):
                rejected.add_metric([name, reason], count)
        yield from (up, state, reconnects, parse_errors, errors, events, rejected)

    def _budgets(self, budgets: BudgetRegistry) -> Iterable[Metric]:
        used = GaugeMetricFamily(
            "perpwatch_request_weight_used",
            "Request weight sent to a host within its trailing window.",
            labels=["host"],
        )
        limit = GaugeMetricFamily("perpwatch_request_weight_limit", "A host's request-weight budget.", labels=["host"])
        window = GaugeMetricFamily(
            "perpwatch_request_weight_window_seconds", "The trailing window a host's budget counts.", labels=["host"]
        )
        paused = GaugeMetricFamily(
            "perpwatch_host_paused_seconds", "Seconds left of a host's rate-limit pause.", labels=["host"]
        )
        pauses = CounterMetricFamily("perpwatch_host_rate_limited", "Rate-limit answers from a host.", labels=["host"])
        paused_total = CounterMetricFamily(
            "perpwatch_host_rate_limited_hold_seconds", "Seconds a host's rate limits paused it.", labels=["host"]
        )
        for budget in budgets.hosts():
            used.add_metric([budget.host], budget.used)
            limit.add_metric([budget.host], budget.limit)
            window.add_metric([budget.host], budget.window_s)
            paused.add_metric([budget.host], budget.paused_for_s)
            pauses.add_metric([budget.host], budget.pauses)
            paused_total.add_metric([budget.host], budget.paused_s)
        yield from (used, limit, window, paused, pauses, paused_total)
