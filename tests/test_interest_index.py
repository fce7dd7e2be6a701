"""The dispatcher's in-memory index of who hears what: which chats an event wakes, each once until its worker
reads the log, and the memory it keeps per chat."""

from __future__ import annotations

import gc
from typing import Any

from bot.dispatch.interest import LOAD_PAGE, InterestIndex
from storage.models import Interest
from tests.factories import liquidation


class _Chats:
    """What `InterestIndex` asks of the chat repository: pages of subscriptions by chat id."""

    def __init__(self, interests: list[Interest]) -> None:
        self.rows = interests
        self.pages = 0

    async def interests(self, *, after_chat: int, limit: int, chat_id: int | None = None) -> list[Interest]:
        self.pages += 1
        if chat_id is not None:
            return [i for i in self.rows if i.chat_id == chat_id]
        ids = sorted({i.chat_id for i in self.rows if i.chat_id > after_chat})[:limit]
        return [i for i in self.rows if i.chat_id in set(ids)]


def _sub(
    chat_id: int, *, venue: str = "*", symbol: str = "*", min_usd: int = 0, topic: str = "liquidation"
) -> Interest:
    # Fresh strings per row, as a database driver hands them over.
    return Interest(
        chat_id=chat_id,
        platform="telegram",
        topic="".join(topic),
        venue="".join(venue),
        symbol="".join(symbol),
        scope="all",
        min_cents=min_usd * 100,
    )


async def _index(interests: list[Interest]) -> InterestIndex:
    index = InterestIndex(_Chats(interests))  # type: ignore[arg-type]
    await index.load()
    return index


async def test_an_event_wakes_the_chats_it_may_concern_once_until_they_read() -> None:
    index = await _index(
        [
            _sub(1),
            _sub(2, venue="binance"),
            _sub(3, venue="aster"),
            _sub(4, symbol="ETH"),
            _sub(5, min_usd=1_000_000),
            _sub(6, topic="whale"),
        ]
    )
    assert index.wake(liquidation(key="a", venue="binance", symbol="BTCUSDT", usd="50000")) == {1, 2}
    assert index.wake(liquidation(key="b", venue="binance", symbol="BTCUSDT", usd="50000")) == set()  # awake
    index.sleep(1)
    assert index.wake(liquidation(key="c", venue="aster", symbol="ETHUSDT", usd="2000000")) == {1, 3, 4, 5}


async def test_a_chat_under_several_keys_is_woken_once_and_sleeps_under_all() -> None:
    index = await _index([_sub(1, symbol="BTC"), _sub(1, venue="binance")])
    assert index.wake(liquidation(key="a", venue="binance", symbol="BTCUSDT", usd="10")) == {1}
    assert index.wake(liquidation(key="b", venue="aster", symbol="BTCUSDT", usd="10")) == set()
    index.sleep(1)
    assert index.wake(liquidation(key="c", venue="binance", symbol="SOLUSDT", usd="10")) == {1}


async def test_a_replaced_chat_hears_what_its_new_subscriptions_say() -> None:
    chats = [_sub(1, symbol="BTC"), _sub(2)]
    index = await _index(chats)
    index.replace(1, [_sub(1, symbol="ETH")])
    assert index.wake(liquidation(key="a", symbol="BTCUSDT", usd="10")) == {2}
    assert index.wake(liquidation(key="b", symbol="ETHUSDT", usd="10")) == {1}


async def test_the_load_pages_and_chats_share_one_copy_of_each_key() -> None:
    """A key's strings and a lone key's tuple are kept once, not per chat: at 100,000 chats the copies cost
    about 30 MiB."""
    rows = [_sub(chat_id, venue="binance") for chat_id in range(1, LOAD_PAGE * 2 + 2)]
    chats = _Chats(rows)
    index = InterestIndex(chats)  # type: ignore[arg-type]
    await index.load()
    assert chats.pages == 4  # three pages of chats, then the empty one
    keys: Any = index._keys
    assert keys.get(1) is keys.get(LOAD_PAGE * 2 + 1)
    assert gc.isenabled()  # the collector paused for the load is running again


async def test_no_one_dict_grows_with_every_chat() -> None:
    """Each chat's keys live in blocks of consecutive ids: a dict of every chat rehashed all of them in one
    step of the load."""
    rows = [_sub(chat_id, venue="binance") for chat_id in range(1, 5001)]
    index = InterestIndex(_Chats(rows))  # type: ignore[arg-type]
    await index.load()
    blocks: Any = index._keys._blocks
    assert sum(len(b) for b in blocks.values()) == 5000
    assert max(len(b) for b in blocks.values()) <= 1024
    assert index.wake(liquidation(key="a", venue="binance", symbol="BTCUSDT", usd="10")) == set(range(1, 5001))
