"""`perpwatch backfill buybacks [programme…]`: a programme's history read now, page after page, with progress.

Inside the bot a programme far behind (Aster's fills from its start, a Lighter treasury's whole explorer
history, an EVM programme's blocks from `from_block`) catches up over several polls, `MAX_PAGES_PER_POLL`
pages each. This runs the same `ProgrammePoller.step` (its source's step from the stored cursor, the page's
buys stored with the new cursor in one transaction, through the poller's host budgets and 429 pauses) until
the source says there is no more, and shows how far it got: a bar on a terminal, plain lines otherwise.

Interrupting it loses at most the page in flight, and a rerun goes on from the stored cursor, counting
nothing twice: it can run while the bot is stopped, or beside it (both then read from the same cursor; a
page both store is recognised by its buys' keys). A step that fails is retried like the poller retries
(a growing delay from `retry_initial_s`); one that still fails after `retries` attempts stops its programme,
the others are still read, and the run ends with `BackfillError`, one line for the operator.

There is no `backfill calendar`: the calendar's one remote source (DefiLlama's emissions dataset) is a single
request per slug, read in full by the bot's first poll, so there is nothing to page and no wait to show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from bot.progress import BarProgress, Progress, progress_for
from perpwatch.buybacks import BuybackLedger, BuybackSource, Fetched, Programme, ProgrammeKind
from perpwatch.clock import SYSTEM_CLOCK, Clock
from watchers.buyback_sources import SOURCES
from watchers.buybacks import ProgrammePoller
from watchers.poller import PollTuning, Request, SessionSource
from watchers.runtime import Runtime

RETRIES = 5
"""Attempts at one step before the run gives up on its programme (the poller's retries, counted)."""

RETRY_INITIAL_S = 10.0
"""The first retry's delay, doubled each time up to `RETRY_MAX_S` (the buybacks watcher's own schedule)."""

RETRY_MAX_S = 300.0

DAY_MS = 86_400_000


class BackfillError(Exception):
    """What ends a backfill, in one line an operator can act on."""


@dataclass
class Backfilled:
    """One programme's run: pages read, buys newly stored, and where its cursor got to."""

    programme: str
    pages: int = 0
    buys: int = 0
    position: str = ""


class _StepPoller(ProgrammePoller):
    """The watcher's poller, one page a poll; it also keeps the chain head an EVM source last read, the
    "of how many blocks" that its cursor alone does not say."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetched: Fetched | None = None
        self.head: int | None = None

    async def poll(self) -> None:
        self.fetched = await self.step()

    async def get_json(self, request: Request) -> Any:
        body = await super().get_json(request)
        call = request.json_body
        if isinstance(call, dict) and call.get("method") == "eth_blockNumber" and isinstance(body, dict):
            result = body.get("result")
            if isinstance(result, str):
                try:
                    self.head = int(result, 16)
                except ValueError:
                    pass
        return body


def _when(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M} UTC"


def _where(programme: Programme, cursor: Any, head: int | None, now: datetime) -> tuple[int, int | None, str, str]:
    """How far a programme's cursor is, as (done, total, unit, text); (0, None, "pages", "") when the cursor
    says nothing of a position (a snapshot source)."""
    if not isinstance(cursor, dict):
        if isinstance(cursor, str):  # DefiLlama's last counted day
            return 0, None, "pages", f"counted to {cursor}"
        return 0, None, "pages", ""
    if programme.kind == "aster_chain_fills" and isinstance(cursor.get("from_ms"), int):
        start = programme.params.get("start_ms")
        start_ms = start if isinstance(start, int) else cursor["from_ms"]
        now_ms = int(now.timestamp() * 1000)
        done = max(0, (cursor["from_ms"] - start_ms) // DAY_MS)
        total = max(done, -(-(now_ms - start_ms) // DAY_MS))
        return done, total, "days", f"cursor at {_when(cursor['from_ms'])}"
    if programme.kind == "evm_erc20_inflow" and isinstance(cursor.get("block"), int):
        block = cursor["block"]
        first = programme.params.get("from_block")
        if head is None or not isinstance(first, int) or head < first:
            return 0, None, "pages", f"cursor at block {block:,}"
        return max(0, block - first + 1), head - first + 1, "blocks", f"cursor at block {block:,} of head {head:,}"
    if programme.kind == "lighter_account_trades":
        scan = cursor.get("scan")
        if isinstance(scan, dict) and isinstance(scan.get("offset"), int):
            return 0, None, "pages", f"history scan at offset {scan['offset']:,}"
        if isinstance(cursor.get("newest"), str):
            return 0, None, "pages", f"counted to {cursor['newest']}"
    return 0, None, "pages", ""


async def backfill_programme(
    poller: _StepPoller,
    shown: Progress,
    *,
    clock: Clock,
    retries: int = RETRIES,
    retry_initial_s: float = RETRY_INITIAL_S,
) -> Backfilled:
    """Steps `poller` until its source has no more, updating `shown` after each page."""
    programme = poller.programme
    result = Backfilled(programme.id)
    failures = 0
    async with poller.opened():
        while True:
            before = poller.new_buys
            if not await poller.poll_once():
                failures += 1
                if failures >= retries:
                    raise BackfillError(
                        f"{programme.id}: {poller.health.last_error} (failed {failures} times in a row; "
                        f"{result.pages} pages stored this run, a rerun goes on from there)"
                    )
                delay = min(RETRY_MAX_S, retry_initial_s * 2 ** (failures - 1))
                shown.note(f"{programme.id}: {poller.health.last_error}; retrying in {delay:g}s")
                await clock.sleep(delay)
                continue
            failures = 0
            fetched = poller.fetched
            assert fetched is not None
            result.pages += 1
            result.buys += poller.new_buys - before
            done, total, unit, where = _where(programme, fetched.cursor, poller.head, clock.now())
            result.position = where
            buys = f"{result.buys:,} new {'buy' if result.buys == 1 else 'buys'} stored"
            pages = f"{result.pages:,} {'page' if result.pages == 1 else 'pages'}"
            detail = "; ".join(x for x in (buys, where) if x)
            if unit == "pages":
                done, total = result.pages, None
            shown.unit = unit
            label = programme.id
            if not fetched.more:
                final = total if total is not None else done
                shown.update(label, final, final, detail=detail if unit == "pages" else f"{pages}; {detail}")
                if isinstance(shown, BarProgress):  # the bar's line is cut at the terminal's width: all of it once
                    shown.note(f"{label}: {pages}; {detail}")
                return result
            shown.update(label, done, total, detail=detail if unit == "pages" else f"{pages}; {detail}")


async def backfill_buybacks(
    ledger: BuybackLedger,
    urls: Mapping[str, str],
    out: TextIO,
    *,
    ids: Sequence[str] = (),
    session: SessionSource | None = None,
    clock: Clock = SYSTEM_CLOCK,
    tty: bool | None = None,
    sources: Mapping[ProgrammeKind, BuybackSource] = SOURCES,
    retries: int = RETRIES,
    retry_initial_s: float = RETRY_INITIAL_S,
) -> list[Backfilled]:
    """Every programme of the store (or those `ids` name, in that order) read to its source's end."""
    programmes = {p.id: p for p in await ledger.programmes()}
    unknown = [pid for pid in ids if pid not in programmes]
    if unknown:
        known = ", ".join(sorted(programmes)) or "none"
        raise BackfillError(f"unknown programme {', '.join(unknown)}; the store has {known}")
    chosen = [programmes[pid] for pid in dict.fromkeys(ids)] if ids else list(programmes.values())
    context = Runtime(clock=clock, session=session, buybacks=ledger).context("backfill")
    results: list[Backfilled] = []
    failed: list[str] = []
    for programme in chosen:
        source = sources.get(programme.kind)
        if source is None:
            failed.append(f"{programme.id}: unknown kind {programme.kind} (a newer release's programme?)")
            continue
        poller = _StepPoller(
            programme, source, ledger, urls, PollTuning(interval_s=RETRY_MAX_S, retry_initial_s=10.0), context
        )
        with progress_for(out, unit="pages", tty=tty, clock=clock.monotonic) as shown:
            try:
                results.append(
                    await backfill_programme(
                        poller, shown, clock=clock, retries=retries, retry_initial_s=retry_initial_s
                    )
                )
            except BackfillError as exc:  # the others are still read; the run fails at its end
                shown.note(f"{exc}")
                failed.append(str(exc))
    total = sum(r.buys for r in results)
    programmes_read = f"{len(results)} {'programme' if len(results) == 1 else 'programmes'}"
    out.write(f"backfill done: {programmes_read}, {total:,} new {'buy' if total == 1 else 'buys'} stored\n")
    out.flush()
    if failed:
        raise BackfillError(failed[0] if len(failed) == 1 else f"{len(failed)} programmes failed: {'; '.join(failed)}")
    return results


async def run(settings: Any, ids: Sequence[str], out: TextIO) -> list[Backfilled]:
    """`perpwatch backfill buybacks`: the bot's store and endpoint settings; the bundled programmes merged
    first, as the bot's start merges them, so a store the bot never ran on has them too."""
    import aiohttp

    from bot.buyback_programmes import aster_wallets, bundled
    from storage import Store
    from watchers.registry import BUYBACK_URL_SETTINGS

    urls = {name: getattr(settings, name) for name in BUYBACK_URL_SETTINGS}
    async with Store(settings.database_url) as store, aiohttp.ClientSession() as session:
        programmes, _refused = bundled()
        programmes += aster_wallets(programmes, settings.aster_buyback_wallets)
        await store.buybacks.merge_bundled(programmes)
        return await backfill_buybacks(store.buybacks, urls, out, ids=ids, session=session)


def interrupted_note() -> str:
    return "backfill interrupted: every page read so far is stored; run it again to go on from there"
