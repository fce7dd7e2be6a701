"""The listener `PERPWATCH_HTTP_LISTEN` opens: `/metrics`, `/healthz`, `/readyz` and the status page `/`.

It runs on the bot's own event loop (an aiohttp.web site beside the watchers), so `/healthz` answering is
itself the proof that the loop turns. It only reads: no route changes anything, and every handler either
reads live objects or waits on a count made off the loop, so a scrape never holds the loop long.

`PERPWATCH_HTTP_TOKEN`, when set, guards the page and `/metrics` (a bearer header, or `?token=` for a
browser), compared in constant time; the probes stay open, since a container's health check carries no
secret and says nothing an attacker could use. The access log is off: a `?token=` URL must not reach a
log line, and a scrape every few seconds would drown the bot's own lines.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.http import HttpStartError
from bot.http.metrics import BotMetrics
from bot.http.status_page import StatusPage
from bot.settings import parse_listen
from storage.status import StatusReads

if TYPE_CHECKING:
    from bot.app import PerpwatchApp

log = logging.getLogger(__name__)

SETTING = "PERPWATCH_HTTP_LISTEN"

SHUTDOWN_TIMEOUT_S = 2.0
"""A request still running at stop gets this long: every handler is a short read, and the bot's stop must
finish within a container's grace period."""

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # a ?token= in the address must not leave with a followed link
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpServer:
    def __init__(
        self,
        listen: str,
        *,
        metrics: BotMetrics,
        page: StatusPage,
        ready: Callable[[], str | None],
        token: str | None = None,
    ) -> None:
        """`ready` returns None when the bot is ready, else what it still waits for."""
        self.listen = listen
        self.host, self.requested_port = parse_listen(listen)
        self.metrics = metrics
        self.page = page
        self.ready = ready
        self._token = token.encode() if token else None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The port bound (the one asked for, or the one the system chose for port 0)."""

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._status)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise HttpStartError(f"cannot listen on {SETTING}={self.listen}: {reason}") from None
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        log.info("http listening listen=%s port=%d", self.listen, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- guard ---------------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is not None and request.path not in ("/healthz", "/readyz") and not self._authorized(request):
            return web.Response(
                status=401,
                text="a token is required: send 'Authorization: Bearer <PERPWATCH_HTTP_TOKEN>' or add ?token=\n",
                headers={"WWW-Authenticate": 'Bearer realm="perpwatch"', **PAGE_HEADERS},
            )
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        assert self._token is not None
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        candidates = [given.strip()] if scheme.lower() == "bearer" else []
        candidates += request.query.getall("token", [])
        # Every candidate is compared, each in constant time, so which one matched does not show in timing.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(candidate.encode(), self._token)
        return matched

    # --- routes --------------------------------------------------------------------------------------
    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        waiting = self.ready()
        if waiting is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {waiting}\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = await self.metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _status(self, _request: web.Request) -> web.Response:
        return web.Response(text=await self.page.render(), content_type="text/html", headers=PAGE_HEADERS)


def for_app(app: PerpwatchApp, ready: Callable[[], str | None]) -> HttpServer:
    """The listener over a bot's live objects, as `PERPWATCH_HTTP_LISTEN` and `PERPWATCH_HTTP_TOKEN` say."""
    settings = app.settings
    if settings.http_listen is None:
        raise ValueError("PERPWATCH_HTTP_LISTEN is not set")
    reads = StatusReads(app.store.db, clock=app.clock)
    metrics = BotMetrics(
        pipeline=app.pipeline,
        dispatcher=app.dispatcher,
        supervisor=app.supervisor,
        budgets=app.runtime.budgets,
        reads=reads,
        clock=app.clock,
    )
    page = StatusPage(
        supervisor=app.supervisor, dispatcher=app.dispatcher, outbox=app.store.outbox, reads=reads, clock=app.clock
    )
    token = settings.http_token.get_secret_value() if settings.http_token is not None else None
    return HttpServer(settings.http_listen, metrics=metrics, page=page, ready=ready, token=token)
