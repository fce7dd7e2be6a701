"""The one REST poller every periodic source shares, and the request-weight budget of each host.

A subclass writes only `poll()`, fetching with `self.get_json(Request(...))`; the base schedules it (an
interval with jitter, so pollers started together drift apart instead of hitting a venue in step), keeps
health for `/status`, and logs on edges only: one warning when polls start failing, one "recovered" line
when they succeed again, repeats at debug (Home Assistant's coordinator does the same).

Budget: venues limit request weight per IP and host (Hyperliquid 1200 per minute for every `/info`
request, Binance 2400), so every poller on a host draws from one `HostBudget`. A request waits until its
weight fits in the trailing window rather than being sent over the limit: over any `window_s` the weight
sent never exceeds `limit`, which also keeps within a venue's fixed-minute counter.

Rate limited anyway (HTTP 429; 418 is Binance's ban after ignored 429s): the whole host pauses for the
`Retry-After` the venue gave, in seconds or as an HTTP date, else for `PAUSE_DEFAULT_S`, because the
limit is per host, not per poller: another poller asking at once would only extend a ban.

Time: every wait is on the injected `Clock`, so tests drive schedules, budgets and pauses with a frozen one.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import json
import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp
from yarl import URL

from perpwatch.backoff import half_jitter
from perpwatch.clock import SYSTEM_CLOCK, Clock
from watchers.base import WatcherHealth, WatcherState, describe

logger = logging.getLogger(__name__)

SessionSource = aiohttp.ClientSession | Callable[[], aiohttp.ClientSession]
"""A session, or the runtime's shared one, asked for only once a loop runs (aiohttp binds it to the loop)."""

PAUSE_DEFAULT_S: Mapping[int, float] = {429: 60.0, 418: 120.0}
"""How long a host pauses on these statuses when the venue says nothing: one full minute window for a
429 (any per-minute counter has reset by then), Binance's shortest ban (2 minutes) for a 418."""

DEFAULT_LIMIT_PER_MIN = 60
"""The budget of a host no venue module declared: the tightest documented limit among our venues
(Lighter's standard account, 60 requests a minute), so an undeclared host is never the one that bans us."""


def host_of(url: str) -> str:
    """What a budget is keyed on: the host, with its port when it is not the scheme's default (loopback
    fakes of two venues differ only by port)."""
    u = URL(url)
    host = u.host or ""
    return host if u.is_default_port() else f"{host}:{u.port}"


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - now).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)  # a date already past: go on now


@dataclass(frozen=True, slots=True)
class Request:
    """One REST call as a venue module declares it; `weight` is what the venue counts it as."""

    url: str
    method: str = "GET"
    params: Mapping[str, str] | None = None
    json_body: Any = None
    weight: int = 1
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError("weight must be >= 0")


class HttpStatusError(Exception):
    """The venue answered, but not with a success."""

    def __init__(self, status: int, url: str, text: str = "") -> None:
        super().__init__(f"HTTP {status} from {URL(url).with_query(None)}" + (f": {text[:120]}" if text else ""))
        self.status = status


class RateLimited(HttpStatusError):
    """A 429/418 (or a status the venue uses so): the host is paused for `pause_s`."""

    def __init__(self, status: int, url: str, pause_s: float) -> None:
        super().__init__(status, url)
        self.pause_s = pause_s
        self.args = (f"HTTP {status} from {URL(url).with_query(None)}: host paused for {pause_s:g}s",)


class HostBudget:
    """Request weight a host allows over a trailing window, shared by every poller on the host.

    `acquire(weight)` returns once the weight fits, and counts it sent; waiters are served in turn, so a
    heavy request is not starved by light ones behind it. `pause(s)` holds every request for `s` seconds.
    `charge(weight)` counts weight learned only from the answer (Hyperliquid charges per 20 items
    returned): it is not waited for, but delays whatever comes next.
    """

    def __init__(self, host: str, limit: int, *, window_s: float = 60.0, clock: Clock = SYSTEM_CLOCK) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("a budget needs a positive limit and window")
        self.host = host
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._sent: collections.deque[tuple[float, int]] = collections.deque()
        self._used = 0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.waited = 0
        """Requests that had to wait for budget or a pause: a figure for `/status`."""
        self.pauses = 0
        self.paused_s = 0.0
        """Rate-limit answers that paused the host, and the seconds they added to its pauses (for metrics)."""

    @property
    def used(self) -> int:
        """Weight sent within the trailing window, as of now."""
        self._expire(self.clock.monotonic())
        return self._used

    @property
    def paused_for_s(self) -> float:
        return max(0.0, self._paused_until - self.clock.monotonic())

    def describe(self) -> str:
        paused = self.paused_for_s
        text = f"{self.used}/{self.limit} per {self.window_s:g}s"
        return f"{text}, paused {paused:.0f}s" if paused > 0 else text

    def pause(self, seconds: float) -> None:
        """Hold every request to this host for `seconds` (a longer pause already set is kept)."""
        now = self.clock.monotonic()
        until = max(self._paused_until, now + seconds)
        self.pauses += 1
        self.paused_s += until - max(self._paused_until, now)
        self._paused_until = until

    def charge(self, weight: int) -> None:
        if weight > 0:
            self._record(self.clock.monotonic(), weight)

    async def acquire(self, weight: int) -> None:
        if weight > self.limit:
            raise ValueError(f"a request of weight {weight} can never fit {self.host}'s budget of {self.limit}")
        waited = self._lock.locked()
        async with self._lock:
            while True:
                now = self.clock.monotonic()
                if now < self._paused_until:
                    waited = True
                    await self.clock.sleep(self._paused_until - now)
                    continue
                self._expire(now)
                if self._used + weight <= self.limit:
                    self._record(now, weight)
                    self.waited += waited
                    return
                waited = True
                await self.clock.sleep(self._free_at(self._used + weight - self.limit) - now)

    def _record(self, now: float, weight: int) -> None:
        self._sent.append((now, weight))
        self._used += weight

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0][0] + self.window_s <= now:
            self._used -= self._sent.popleft()[1]

    def _free_at(self, needed: int) -> float:
        """When enough of the oldest weight leaves the window to free `needed`."""
        freed = 0
        for sent_at, weight in self._sent:
            freed += weight
            if freed >= needed:
                return sent_at + self.window_s
        return self.clock.monotonic()


class BudgetRegistry:
    """One `HostBudget` per host for the whole bot. A venue module declares its host's limit; the first
    declaration wins unless a later one is tighter (two modules reading one host must both be obeyed)."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, default_limit: int = DEFAULT_LIMIT_PER_MIN) -> None:
        self.clock = clock
        self.default_limit = default_limit
        self._budgets: dict[str, HostBudget] = {}

    def declare(self, url_or_host: str, limit: int, *, window_s: float = 60.0) -> HostBudget:
        host = host_of(url_or_host) if "://" in url_or_host else url_or_host
        budget = self._budgets.get(host)
        if budget is None:
            budget = self._budgets[host] = HostBudget(host, limit, window_s=window_s, clock=self.clock)
        elif limit / window_s < budget.limit / budget.window_s:
            budget.limit, budget.window_s = limit, window_s
        return budget

    def for_url(self, url: str) -> HostBudget:
        host = host_of(url)
        budget = self._budgets.get(host)
        if budget is None:
            budget = self._budgets[host] = HostBudget(host, self.default_limit, clock=self.clock)
        return budget

    def hosts(self) -> list[HostBudget]:
        """Every host's budget, by host: what the metrics read at scrape time."""
        return [self._budgets[host] for host in sorted(self._budgets)]

    def snapshot(self) -> dict[str, str]:
        """Each host's use, for `/status` (a watcher copies it into `WatcherHealth.extra`)."""
        return {f"budget {host}": budget.describe() for host, budget in sorted(self._budgets.items())}


@contextlib.asynccontextmanager
async def session_of(source: SessionSource | None) -> AsyncIterator[aiohttp.ClientSession]:
    """The session a source gives, or one of its own for the block where a runtime has none (tests, tools)."""
    if source is None:
        async with aiohttp.ClientSession() as own:
            yield own
    else:
        yield source if isinstance(source, aiohttp.ClientSession) else source()


@dataclass(frozen=True, slots=True)
class PollTuning:
    """When a poller runs. `jitter` is the fraction of the interval each wait may move either way;
    a failed poll is retried after a growing, half-jittered delay from `retry_initial_s`, never longer
    than the interval itself. `min_refresh_s` bounds on-demand refreshes (`refresh_soon`)."""

    interval_s: float
    jitter: float = 0.1
    retry_initial_s: float = 5.0
    min_refresh_s: float = 30.0
    request_timeout_s: float = 30.0
    pause_statuses: Mapping[int, float] = field(default_factory=lambda: dict(PAUSE_DEFAULT_S))

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.retry_initial_s <= 0 or self.request_timeout_s <= 0:
            raise ValueError("interval_s, retry_initial_s and request_timeout_s must be > 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.min_refresh_s < 0:
            raise ValueError("min_refresh_s must be >= 0")


class RestPoller(abc.ABC):
    """Runs `poll()` every `tuning.interval_s` (jittered) until cancelled; `poll` raises to fail.

    `refresh_soon()` asks for a poll now, out of schedule (a parser met a symbol it does not know): at most
    one poll is ever in flight, and one is not started sooner than `min_refresh_s` after the last.
    """

    def __init__(
        self,
        name: str,
        tuning: PollTuning,
        *,
        budgets: BudgetRegistry,
        session: SessionSource | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        health: WatcherHealth | None = None,
    ) -> None:
        self.name = name
        self.tuning = tuning
        self.budgets = budgets
        self.clock = clock
        self.health = health if health is not None else WatcherHealth(name=name, clock=clock)
        self._session_source = session
        self._session: aiohttp.ClientSession | None = None
        self._rand = rand
        self._wake = asyncio.Event()
        self._running = False
        self._polling = False
        self._last_attempt: float | None = None
        self._failures = 0
        self._failing_since: float | None = None
        self._used_budgets: dict[str, HostBudget] = {}

    @abc.abstractmethod
    async def poll(self) -> None:
        """One round of requests; raise on anything that makes the round's result unusable."""

    async def run(self) -> None:
        async with session_of(self._session_source) as session:
            self._session = session
            self._running = True
            try:
                while True:
                    ok = await self.poll_once()
                    self._wake.clear()
                    await self.clock.wait(self._wake, self._next_delay(ok))
            finally:
                self._running = False
                self._session = None

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        """The session for `poll_once` driven step by step from outside (`perpwatch backfill`) instead of by
        `run`'s schedule; budgets and 429 pauses apply the same."""
        async with session_of(self._session_source) as session:
            self._session = session
            try:
                yield
            finally:
                self._session = None

    def refresh_soon(self) -> bool:
        """Ask for a poll out of schedule; False when refused (not running, or too soon after the last).

        True also when a poll is already in flight: its answer is the one asked for."""
        if not self._running:
            return False
        if self._polling:
            return True
        if self._last_attempt is not None and self.clock.monotonic() - self._last_attempt < self.tuning.min_refresh_s:
            return False
        self._wake.set()
        return True

    async def poll_once(self) -> bool:
        """One poll with its health and logs; True when it succeeded. Cancellation is never swallowed."""
        self._polling = True
        self._last_attempt = self.clock.monotonic()
        try:
            await self.poll()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)
            return False
        finally:
            self._polling = False
            self._report_budgets()
        self._succeeded()
        return True

    async def get_json(self, request: Request) -> Any:
        """The decoded body (decimals as `Decimal`), after waiting for the host's budget.

        Raises `RateLimited` (the host is then paused), `HttpStatusError`, or aiohttp's errors."""
        session = self._session
        if session is None:
            raise RuntimeError("get_json is for poll(), while the poller runs")
        budget = self.budgets.for_url(request.url)
        self._used_budgets[budget.host] = budget
        await budget.acquire(request.weight)
        timeout = aiohttp.ClientTimeout(total=self.tuning.request_timeout_s)
        async with session.request(
            request.method,
            request.url,
            params=request.params,
            json=request.json_body,
            headers=request.headers,
            timeout=timeout,
        ) as response:
            if response.status in self.tuning.pause_statuses:
                said = retry_after_s(response.headers.get("Retry-After"), self.clock.now())
                pause_s = said if said is not None else self.tuning.pause_statuses[response.status]
                budget.pause(pause_s)
                raise RateLimited(response.status, request.url, pause_s)
            text = await response.text()
            if response.status >= 300:
                raise HttpStatusError(response.status, request.url, text)
        return json.loads(text, parse_float=Decimal)

    def _next_delay(self, ok: bool) -> float:
        t = self.tuning
        if ok:
            return t.interval_s * (1 + t.jitter * (2 * self._rand() - 1))
        ceiling = min(t.interval_s, t.retry_initial_s * (1 << min(self._failures - 1, 16)))
        return half_jitter(ceiling, self._rand)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        error = describe(exc)
        self.health.errors += 1
        self.health.last_error = error
        if self._failures == 1:
            self._failing_since = self.clock.monotonic()
            self.health.state = WatcherState.DOWN
            self.health.connected_since = None
            logger.warning("poll failing poller=%s error=%s", self.name, error)
        else:
            logger.debug("poll still failing poller=%s attempt=%d error=%s", self.name, self._failures, error)

    def _succeeded(self) -> None:
        self.health.last_frame_at = self.clock.now()
        if self._failures:
            down_s = self.clock.monotonic() - (self._failing_since or self.clock.monotonic())
            logger.info("poll recovered poller=%s down_s=%.1f attempts=%d", self.name, down_s, self._failures)
        self._failures = 0
        self._failing_since = None
        if self.health.state is not WatcherState.UP:
            self.health.mark_up()

    def _report_budgets(self) -> None:
        for host, budget in self._used_budgets.items():
            self.health.extra[f"budget {host}"] = budget.describe()


class OwnerPoller(RestPoller):
    """A poller made from its owner watcher's context (its budgets, session, clock and health), for a watcher
    that keeps its own state beside its requests and wants only the schedule, budget, pauses and health of
    the base. Subclasses say what a round is."""

    def __init__(self, owner: _Owner, tuning: PollTuning, *, name: str | None = None) -> None:
        super().__init__(
            name or owner.name,
            tuning,
            budgets=owner.ctx.budgets,
            session=owner.ctx.session,
            clock=owner.clock,
            health=owner.health,
        )


class OwnedPoller(OwnerPoller):
    """A poller whose round is its owner's `refresh(poller)`."""

    def __init__(self, owner: PollOwner, tuning: PollTuning) -> None:
        super().__init__(owner, tuning)
        self.owner = owner

    async def poll(self) -> None:
        await self.owner.refresh(self)


class _OwnerContext(Protocol):
    @property
    def budgets(self) -> BudgetRegistry: ...

    @property
    def session(self) -> SessionSource | None: ...


class _Owner(Protocol):
    name: str
    clock: Clock
    health: WatcherHealth

    @property
    def ctx(self) -> _OwnerContext: ...


class PollOwner(_Owner, Protocol):
    async def refresh(self, poller: RestPoller) -> None: ...
