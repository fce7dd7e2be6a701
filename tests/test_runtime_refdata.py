"""Reference data: fetched at start and saved as the last good copy on both engines; loaded from storage
when the venue's REST is down at start; refreshed on demand for an unknown symbol, at a bounded rate."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from perpwatch.clock import FrozenClock
from storage import Store
from tests.conftest import eventually
from tests.fakes.rest import FakeRest
from watchers.poller import Request
from watchers.refdata import UNKNOWN_SYMBOL, Change, RefSource, UnknownKey
from watchers.runtime import Runtime

PATH = "/api/v1/info"


def parse(body: Any) -> dict[str, Decimal]:
    """Pacifica's `/info` envelope, reduced to symbol -> lot size."""
    if not body.get("success"):
        raise ValueError("envelope says no success")
    return {item["symbol"]: Decimal(str(item["lot_size"])) for item in body["data"]}


def info(*symbols: str) -> dict[str, Any]:
    return {"success": True, "data": [{"symbol": s, "lot_size": "0.00001"} for s in symbols], "error": None}


def source(fake: FakeRest, **kw: Any) -> RefSource[dict[str, Decimal]]:
    return RefSource(name="pacifica.markets", request=Request(fake.url(PATH)), parse=parse, keys=dict.keys, **kw)


@pytest.fixture
async def fake() -> Any:
    clock = FrozenClock()
    async with FakeRest(clock) as server:
        yield server


@pytest.mark.engines
async def test_the_last_good_copy_is_used_when_the_rest_is_down_at_start(database_url: str, fake: Any) -> None:
    fake.serve(PATH, info("BTC", "ETH"))
    async with Store(database_url) as store:
        first = Runtime(clock=fake.clock, kv=store.watchers).refdata.get(source(fake))
        async with first.use():
            assert set(await first.ready()) == {"BTC", "ETH"}
        assert first.origin == "live"

    fake.down = True
    async with Store(database_url) as store:  # a restart: new process, same database, venue down
        again = Runtime(clock=fake.clock, kv=store.watchers).refdata.get(source(fake))
        async with again.use():
            value = await again.ready()
            await eventually(lambda: again.health.errors >= 1, what="a failed refresh")
        assert value == {"BTC": Decimal("0.00001"), "ETH": Decimal("0.00001")}  # decimals exact
        assert again.origin == "stored" and again.health.errors >= 1
        assert "stored" in again.status() and "refresh failing" in again.status()


async def test_a_body_that_does_not_parse_never_replaces_the_last_good_copy(fake: Any) -> None:
    fake.serve(PATH, info("BTC"))
    refdata = Runtime(clock=fake.clock).refdata.get(source(fake, min_refresh_s=0))
    async with refdata.use():
        await refdata.ready()
        fake.serve(PATH, {"success": False, "data": None})
        assert refdata.refresh_soon()
        await eventually(lambda: refdata.health.errors == 1)
        fake.serve(PATH, info())  # parses, but to no symbols at all
        await fake.clock.advance(10)
        await eventually(lambda: refdata.health.errors == 2)
    assert set(refdata.value or {}) == {"BTC"}
    assert refdata.health.errors == 2


async def test_an_unknown_symbol_is_refused_and_fetched_not_guessed(fake: Any) -> None:
    fake.serve(PATH, info("BTC"))
    refdata = Runtime(clock=fake.clock).refdata.get(source(fake, min_refresh_s=60))
    changes: list[Change] = []
    refdata.listen(lambda _value, change: changes.append(change))
    async with refdata.use():
        await refdata.ready()
        fake.serve(PATH, info("BTC", "NEWCOIN"))
        assert not refdata.refresh_soon()  # the start-up fetch was just now
        await fake.clock.advance(60)
        with pytest.raises(UnknownKey) as refused:
            refdata.require("NEWCOIN")
        assert refused.value.reason == UNKNOWN_SYMBOL
        await fake.until(lambda: len(fake.seen) == 2)
        await eventually(lambda: "NEWCOIN" in refdata.keys, what="the refreshed keys")
        # a second unknown symbol right after: no new request before min_refresh_s has passed
        assert not refdata.known("OTHER") and not refdata.refresh_soon()
        await fake.clock.advance(30)
        assert len(fake.seen) == 2
        await fake.clock.advance(31)
        assert refdata.refresh_soon()
        await fake.until(lambda: len(fake.seen) == 3)
    assert changes[-1] == Change(added=frozenset({"NEWCOIN"}), removed=frozenset())
