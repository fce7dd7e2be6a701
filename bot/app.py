"""Wiring and lifecycle: store → platforms → dispatcher → watchers up; the reverse down.

The same shape as python-telegram-bot's Application (`start` → run → `stop`), so tests can start the
whole bot against loopback fakes, kill it mid-flight, and start it again on the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO

from bot.buyback_programmes import aster_wallets
from bot.buyback_programmes import bundled as bundled_programmes
from bot.buybacks import BuybackReports
from bot.calendar import CalendarService, calendar_watchers
from bot.cascades import CascadeDetector, CascadeSettings, Thresholds, resume
from bot.commands import Context
from bot.dispatch.dispatcher import Dispatcher
from bot.pipeline import Pipeline
from bot.platforms.console import CONSOLE_CHAT_ID, ConsolePlatform
from bot.platforms.delivery import Platform
from bot.render import Reply
from bot.services import Services
from bot.settings import Settings
from bot.supervisor import Supervisor
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Topic
from storage import Store
from storage.models import Chat
from watchers.base import Watcher
from watchers.buybacks import NAME as BUYBACKS
from watchers.prices import HyperliquidMarks, PriceSource
from watchers.registry import build_watchers
from watchers.runtime import Runtime, SharedSession

if TYPE_CHECKING:
    from bot.http.server import HttpServer

log = logging.getLogger(__name__)

CASCADE_TICK_S = 1.0
"""How often the clock looks at open cascades (quiet ones end, held-back growth is written); a look with
none open costs nothing."""


class PerpwatchApp:
    def __init__(
        self,
        settings: Settings,
        *,
        watchers: Sequence[Watcher] | None = None,
        console_stream: TextIO | None = None,
        pacing: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = Store(settings.database_url, clock=clock)
        self.platforms: list[Platform] = self._build_platforms(console_stream)
        self.dispatcher = Dispatcher(self.store.outbox, self.store.chats, self.platforms, pacing=pacing, clock=clock)
        self.cascades = CascadeDetector(
            CascadeSettings(
                window=timedelta(seconds=settings.cascade_window_s),
                symbol=Thresholds(settings.cascade_min_count, settings.cascade_min_usd),
                market=Thresholds(settings.cascade_market_min_count, settings.cascade_market_min_usd),
            )
        )
        self.pipeline = Pipeline(
            self.store.outbox,
            on_accepted=self.dispatcher.accepted,
            on_uncertain=self.dispatcher.forget_hints,
            cascades=self.cascades,
            clock=clock,
        )
        # One HTTP session, one budget per host and one copy of each reference dataset for every watcher;
        # their durable state lives in the store (opened before any watcher runs).
        self.runtime = Runtime(
            clock=clock,
            kv=self.store.watchers,
            session=SharedSession(),
            sink=self.pipeline,
            watched=self.store.chats.watched_addresses,
            buybacks=self.store.buybacks,
        )
        self.supervisor = Supervisor(
            list(watchers)
            if watchers is not None
            else build_watchers(settings, clock=clock, runtime=self.runtime)
            + calendar_watchers(settings, self.runtime),
            self.pipeline,
            self.store,
            clock=clock,
        )
        self.services = Services(self.store, settings, self.supervisor, self.dispatcher, clock)
        # The unlock/TGE calendar: the bundled file merged at start, reminders fired as they fall due.
        self.prices = PriceSource(
            settings.coingecko_url,
            session=self.runtime.session,
            budgets=self.runtime.budgets,
            clock=clock,
            marks=HyperliquidMarks(  # a token trading as a Hyperliquid perp: its mark first, CoinGecko's else
                settings.hyperliquid_info_url, session=self.runtime.session, budgets=self.runtime.budgets, clock=clock
            ),
        )
        self.calendar = CalendarService(
            self.store,
            accept=self.pipeline.accept,
            withdraw=lambda thread: self.pipeline.withdraw(thread, reason="its calendar entry changed"),
            clock=clock,
            prices=self.prices,
        )
        self._calendar_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._janitor_task: asyncio.Task[None] | None = None
        self._cascade_task: asyncio.Task[None] | None = None
        self.buyback_reports = BuybackReports(
            self.store.buybacks, self.store.chats, self.store.watchers, self.pipeline, clock
        )
        self._reports_task: asyncio.Task[None] | None = None
        self._started: list[Platform] = []
        self._store_open = False
        self.http: HttpServer | None = None
        """The metrics and status listener (bot/http), only when PERPWATCH_HTTP_LISTEN is set."""
        if settings.http_listen is not None:
            from bot.http.server import for_app

            self.http = for_app(self, self._waiting_for)

    def _build_platforms(self, console_stream: TextIO | None) -> list[Platform]:
        s = self.settings
        platforms: list[Platform] = []
        if s.telegram_bot_token is not None:
            from bot.platforms.telegram import TelegramPlatform

            platforms.append(
                TelegramPlatform(
                    s.telegram_bot_token.get_secret_value(),
                    api_url=s.telegram_api_url,
                    register_chat=self.register_chat,
                    make_context=self.make_context,
                    send_reply=self.send_reply,
                )
            )
        if s.discord_bot_token is not None:
            from bot.platforms.discord import DiscordPlatform

            platforms.append(
                DiscordPlatform(
                    s.discord_bot_token.get_secret_value(),
                    api_url=s.discord_api_url,
                    gateway_url=s.discord_gateway_url,
                    register_chat=self.register_chat,
                    make_context=self.make_context,
                )
            )
        if not platforms:
            platforms.append(ConsolePlatform(fmt=s.console_format, stream=console_stream))
        return platforms

    # --- what platforms call back into --------------------------------------------------------------
    async def send_reply(self, chat: Chat, reply: Reply, reply_to: str | None) -> None:
        await self.dispatcher.reply(chat, reply, reply_to)

    async def register_chat(self, platform: str, chat_id: str, kind: str, title: str | None) -> Chat:
        return await self.store.chats.upsert(platform, chat_id, kind=kind, title=title)

    def make_context(
        self,
        platform: str,
        chat: Chat,
        user_id: str,
        args: dict[str, str],
        is_chat_admin: Callable[[], Awaitable[bool]],
    ) -> Context:
        return Context(
            platform=platform,
            chat=chat,
            user_id=user_id,
            args=args,
            is_chat_admin=is_chat_admin,
            services=self.services,
        )

    # --- lifecycle ----------------------------------------------------------------------------------
    def _waiting_for(self) -> str | None:
        """What `/readyz` waits for: storage open and a platform started; None once both hold."""
        if not self._store_open:
            return "storage is not open"
        if not self._started:
            return "no platform has started"
        return None

    async def start(self) -> None:
        if self.http is not None:  # first: a bad address stops the start before anything else has begun
            await self.http.start()
        try:
            await self.store.open()
        except BaseException:
            if self.http is not None:
                await self.http.stop()
            raise
        self._store_open = True
        try:
            if any(p.name == "console" for p in self.platforms):
                await self._subscribe_console()
            for platform in self.platforms:
                await platform.start()
                self._started.append(platform)
            self._dispatch_task = asyncio.create_task(self.dispatcher.run(), name="dispatcher")
            self._janitor_task = asyncio.create_task(self._prune_history(), name="janitor")
            if BUYBACKS in self.supervisor.watchers:  # no programme is read without it: nothing to report
                await self._merge_bundled()
                self._reports_task = asyncio.create_task(self.buyback_reports.run(), name="buyback-reports")
            await self._load_cascades()
            self._cascade_task = asyncio.create_task(self._end_quiet_cascades(), name="cascades")
            await self._start_calendar()
            await self.supervisor.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "perpwatch started platforms=%s watchers=%s",
            ",".join(p.name for p in self.platforms),
            ",".join(self.supervisor.watchers) or "none",
        )

    async def _merge_bundled(self) -> None:
        """The bundled buyback programmes, merged into the store: a second start changes nothing, and one an
        operator removed stays removed. A bad bundled entry was refused with its reason and costs only itself."""
        programmes, _refused = bundled_programmes()
        programmes += aster_wallets(programmes, self.settings.aster_buyback_wallets)
        added, updated = await self.store.buybacks.merge_bundled(programmes)
        if added or updated:
            log.info("bundled buyback programmes merged added=%d updated=%d", added, updated)

    async def _subscribe_console(self) -> None:
        """The console hears every topic above PERPWATCH_CONSOLE_MIN_USD, re-read from settings each start."""
        chat = await self.store.chats.upsert("console", CONSOLE_CHAT_ID, kind="private", title="console")
        floor = self.settings.console_min_usd
        await self.store.chats.replace_subscriptions(chat.id, [(t.value, floor) for t in Topic])

    async def _load_cascades(self) -> None:
        """A cascade in progress when the bot stopped goes on in the same message."""
        await resume(self.cascades, self.store.history, self.clock.now(), tick=timedelta(seconds=CASCADE_TICK_S))
        if self.cascades.open_cascades:
            log.info("cascades resumed open=%d", len(self.cascades.open_cascades))

    async def _start_calendar(self) -> None:
        """Merge the calendar and catch up on reminders that fell due while stopped; a failure here costs
        the calendar's start, not the bot's (its job tries again on every tick)."""
        try:
            await self.calendar.start()
        except Exception:
            log.exception("calendar start failed; its job tries again")
        self._calendar_task = asyncio.create_task(self.calendar.run(), name="calendar")

    async def _end_quiet_cascades(self, every_s: float = CASCADE_TICK_S) -> None:
        """A cascade ends when its market goes quiet, which no event announces, and growth held back by the
        revision throttle is written once due even if no further liquidation comes: the clock looks."""
        while True:
            await self.clock.sleep(every_s)
            try:
                await self.pipeline.tick()
            except Exception as exc:  # storage away: the next look ends it
                log.warning("ending quiet cascades failed; will try again error=%s", type(exc).__name__)

    async def _prune_history(self, every_s: float = 3600.0) -> None:
        """Hourly: drop delivered history past PERPWATCH_RETENTION_DAYS so the database stays bounded."""
        while True:
            before = self.clock.now() - timedelta(days=self.settings.retention_days)
            try:
                deliveries, events = await self.store.outbox.prune(before=before)
                if deliveries or events:
                    log.info("pruned history deliveries=%d events=%d before=%s", deliveries, events, before.date())
            except Exception:
                log.exception("pruning history failed; will try again")
            await self.clock.sleep(every_s)

    async def stop(self) -> None:
        if self.http is not None:  # no scrape or page reads a bot half stopped, nor a closed store
            await self.http.stop()
        await self.supervisor.stop()
        await self.runtime.close()
        await self.pipeline.drain()
        for task in (
            self._reports_task,
            self._calendar_task,
            self._cascade_task,
            self._janitor_task,
            self._dispatch_task,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._dispatch_task = self._janitor_task = self._cascade_task = self._reports_task = self._calendar_task = None
        for platform in reversed(self._started):
            try:
                await platform.stop()
            except Exception:
                log.exception("platform stop failed platform=%s", platform.name)
        self._started.clear()
        self._store_open = False
        await self.store.close()

    async def __aenter__(self) -> PerpwatchApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
