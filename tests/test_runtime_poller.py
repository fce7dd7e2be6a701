"""The REST poller base against a loopback venue: the host's weight budget holds under concurrency, a 429
pauses the host for its Retry-After, and a failing poller logs once when failures start and once when they
end. Time is a frozen clock; real waits only bound a hang."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from perpwatch.clock import FrozenClock
from tests.fakes.rest import FakeRest
from watchers.base import WatcherState
from watchers.poller import BudgetRegistry, HostBudget, PollTuning, Request, RestPoller, retry_after_s

PATH = "/info"


class Burst(RestPoller):
    """Makes `n` requests at once per poll, as several pollers of one host would."""

    def __init__(self, fake: FakeRest, n: int, budgets: BudgetRegistry, clock: FrozenClock, **kw: Any) -> None:
        super().__init__(f"burst{id(self)}", PollTuning(interval_s=3600, **kw), budgets=budgets, clock=clock)
        self.request = Request(fake.url(PATH), weight=fake.weights[PATH])
        self.n = n
        self.bodies: list[Any] = []

    async def poll(self) -> None:
        self.bodies = list(await asyncio.gather(*(self.get_json(self.request) for _ in range(self.n))))


@contextlib.asynccontextmanager
async def running(*pollers: RestPoller) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_host_budget_is_never_exceeded_by_concurrent_pollers() -> None:
    clock = FrozenClock()
    async with FakeRest(clock) as fake:
        fake.serve(PATH, {"ok": True}, weight=2)
        budgets = BudgetRegistry(clock=clock)
        budget = budgets.declare(fake.url("/"), 10)  # five requests of weight 2 per minute
        pollers = [Burst(fake, 4, budgets, clock) for _ in range(3)]  # twelve requests wanted at once
        async with running(*pollers):
            await fake.until(lambda: len(fake.seen) == 5)
            await asyncio.sleep(0.05)  # any request sent over budget would arrive now
            assert len(fake.seen) == 5 and budget.used == 10
            await clock.advance(60)
            await fake.until(lambda: len(fake.seen) == 10)
            await clock.advance(60)
            await fake.until(lambda: len(fake.seen) == 12)
        assert fake.max_weight_in(60) <= 10
        assert all(len(p.bodies) == 4 for p in pollers)
        assert budget.waited >= 7


async def test_a_429_pauses_the_host_for_its_retry_after_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watchers.poller")
    clock = FrozenClock()
    async with FakeRest(clock) as fake:
        fake.serve(PATH, {"ok": True})
        budgets = BudgetRegistry(clock=clock)
        budget = budgets.declare(fake.url("/"), 100)
        poller = Burst(fake, 1, budgets, clock, retry_initial_s=1.0)
        other = Burst(fake, 1, budgets, clock)  # another poller on the same host
        fake.limited = ["30"]
        async with running(poller):
            await fake.until(lambda: len(fake.seen) == 1)
            await asyncio.sleep(0.05)
            assert poller.health.state is WatcherState.DOWN and "429" in (poller.health.last_error or "")
            assert budget.paused_for_s == pytest.approx(30)
            async with running(other):
                await clock.advance(29)
                await asyncio.sleep(0.05)
                assert len(fake.seen) == 1  # neither poller asked while the host was paused
                await clock.advance(1)
                await fake.until(lambda: len(fake.seen) == 3)
        assert fake.seen[1].at - fake.seen[0].at >= 30
        assert poller.health.state.value == "up"
        assert "budget" in next(iter(poller.health.extra))
    failing = [r for r in caplog.records if "poll failing" in r.message]
    recovered = [r for r in caplog.records if "poll recovered" in r.message]
    assert len(failing) == 1 and len(recovered) == 1


async def test_errors_are_logged_when_they_start_and_when_they_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watchers.poller")
    clock = FrozenClock()
    async with FakeRest(clock) as fake:
        fake.serve(PATH, {"ok": True})
        budgets = BudgetRegistry(clock=clock)
        poller = Burst(fake, 1, budgets, clock, retry_initial_s=1.0)
        fake.down = True
        async with running(poller):
            for n in range(1, 5):
                await fake.until(lambda n=n: len(fake.seen) == n)  # type: ignore[misc]
                await asyncio.sleep(0.02)
                await clock.advance(120)
            fake.down = False
            await fake.until(lambda: fake.seen[-1].status == 200)
            await asyncio.sleep(0.02)
        assert poller.health.errors == 4 and poller.health.state is WatcherState.UP
    messages = [r.message for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("poll failing" in m for m in messages) == 1
    assert sum("poll recovered" in m and "attempts=4" in m for m in messages) == 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_s("12", now) == 12.0
    assert retry_after_s("Thu, 01 Jan 2026 00:01:00 GMT", now) == 60.0
    assert retry_after_s((now - timedelta(seconds=5)).strftime("%a, %d %b %Y %H:%M:%S GMT"), now) == 0.0
    assert retry_after_s("soon", now) is None and retry_after_s(None, now) is None


async def test_a_request_heavier_than_the_whole_budget_is_refused() -> None:
    budget = HostBudget("example", 10, clock=FrozenClock())
    with pytest.raises(ValueError, match="can never fit"):
        await budget.acquire(11)


def test_a_tighter_declaration_of_a_host_wins() -> None:
    budgets = BudgetRegistry(clock=FrozenClock())
    budgets.declare("https://api.example.com/info", 1200)
    assert budgets.declare("api.example.com", 600).limit == 600
    assert budgets.declare("api.example.com", 2400).limit == 600
    assert budgets.snapshot() == {"budget api.example.com": "0/600 per 60s"}
