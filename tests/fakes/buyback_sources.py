"""Loopback fakes of every buyback source, speaking the wire shapes the sources' modules cite, apart from the
code under test: Hyperliquid `/info` (`spotMeta`, `spotClearinghouseState`), Aster Chain JSON-RPC
(`aster_spotUserFills` with its record cap), an EVM JSON-RPC node (`eth_blockNumber`, `eth_getLogs` with a
block-range limit answered with Infura's code, `eth_getBlockByNumber`), Lighter's explorer account logs
(newest first, `limit`/`offset`) and DefiLlama's `/summary/fees/{slug}` (a client error for an unknown slug).

Each fake records what it was asked (`seen`, with the weight the venue's docs give the request, so a test can
compare it with the budget the client declared) and takes scripted faults in `faults`, each answering one
request: rate limited with `Retry-After`, a server error, or a malformed body sent as a success. Bodies start
from the saved samples in `/work/shared/payloads/` where one exists.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

PAYLOADS = Path(__file__).resolve().parents[3] / "shared" / "payloads"

AF = "0xfefefefefefefefefefefefefefefefefefefefe"
"""The Assistance Fund's system address (research/unlocks-buybacks-tge.md §2.1)."""
HYPE_TOKEN_ID = "0x0d01dc56dcaaca66ad901c959b4011ec"
HYPE_INDEX = 150
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Fault:
    """One scripted answer: `status` with `text`, and `Retry-After` when given."""

    status: int
    text: str = ""
    retry_after: str | None = None


def rate_limited(retry_after: str) -> Fault:
    return Fault(429, "too many requests", retry_after)


def server_error() -> Fault:
    return Fault(500, "internal error")


def malformed(text: str) -> Fault:
    """A success whose body is `text` as sent (not JSON-encoded again)."""
    return Fault(200, text)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    weight: int
    status: int


@dataclass
class _Loopback:
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    before: Callable[[Seen], None] | None = None
    """Runs as each request arrives, before it is answered (a venue that changes between two pages)."""

    def __post_init__(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")

    def url(self, path: str = "") -> str:
        return str(self._server.make_url(path))

    @property
    def weight_seen(self) -> int:
        return sum(s.weight for s in self.seen)

    def weight_of(self, body: Any) -> int:
        return 1

    def answer(self, request: web.Request, body: Any) -> web.Response:
        raise NotImplementedError

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.method == "POST" and request.can_read_body else None
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            response = web.Response(status=fault.status, text=fault.text, headers=headers)
        else:
            response = self.answer(request, body)
        seen = Seen(request.method, request.path, dict(request.query), body, self.weight_of(body), response.status)
        if self.before is not None:
            self.before(seen)
        self.seen.append(seen)
        return response

    async def __aenter__(self) -> Any:
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.close()


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(value), content_type="application/json")


@dataclass
class FakeHyperliquidInfo(_Loopback):
    """`POST /info` for `spotMeta` and `spotClearinghouseState`.

    `spotMeta` is the docs sample with HYPE added at its mainnet index and tokenId (research §2.1; the entry's
    other values are the sample's HFUN entry). With `decoy`, another token is named "HYPE" at another index and
    the balances list a row of it too: a reader going by name would take it. `spotClearinghouseState` is the
    real Assistance Fund capture with HYPE's `total`/`entryNtl` settable."""

    DOC_WEIGHTS = {"spotMeta": 20, "spotClearinghouseState": 2}  # noqa: RUF012  (exchange-apis.md §1.4, §8.5)
    total: str = "47942118.5447392315"
    entry_ntl: str = "1359925585.3465132713"
    decoy: bool = False
    listed: bool = True
    """False: HYPE's balance row is absent."""

    def weight_of(self, body: Any) -> int:
        return self.DOC_WEIGHTS.get(str(body.get("type")) if isinstance(body, dict) else "", 20)

    def answer(self, request: web.Request, body: Any) -> web.Response:
        if request.path != "/info" or not isinstance(body, dict):
            return web.Response(status=404, text="no such path")
        if body.get("type") == "spotMeta":
            meta = load("hyperliquid_spotMeta_docs.json")
            template = meta["tokens"][2]
            meta["tokens"].append(dict(template, name="HYPE", index=HYPE_INDEX, tokenId=HYPE_TOKEN_ID))
            if self.decoy:
                meta["tokens"][2].update(name="HYPE")
            return _json(meta)
        if body.get("type") == "spotClearinghouseState":
            state = load("hyperliquid_spotClearinghouseState_assistanceFund_real2026.json")
            rows = [r for r in state["balances"] if r["token"] != HYPE_INDEX or self.listed]
            for row in rows:
                if row["token"] == HYPE_INDEX:
                    row.update(total=self.total, entryNtl=self.entry_ntl)
            if self.decoy:
                rows.append({"coin": "HYPE", "token": 2, "total": "5", "hold": "0.0", "entryNtl": "7"})
            state["balances"] = rows
            return _json(state)
        return web.Response(status=422, text="Failed to deserialize the JSON body")


@dataclass
class FakeAsterChain(_Loopback):
    """`POST /info` JSON-RPC `aster_spotUserFills` (DefiLlama/dimension-adapters:fees/aster-spot/index.ts):
    params `[wallet, null, fromMs, toMsInclusive, "latest"]`, `result.fills[]` of `{symbol, side, price, qty,
    time}`, at most `CAP` a response. Which fills a capped answer keeps is not documented; this fake keeps the
    oldest, and answers them newest first so a reader cannot rely on the order."""

    CAP = 1000
    fills: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def fill(self, wallet: str, time: int, price: str, qty: str, side: str = "BUY", symbol: str = "ASTERUSDT") -> None:
        item = {"symbol": symbol, "side": side, "price": price, "qty": qty, "time": time}
        self.fills.setdefault(wallet.lower(), []).append(item)

    def windows(self) -> list[tuple[int, int]]:
        return [(s.body["params"][2], s.body["params"][3]) for s in self.seen if s.status == 200 and s.body]

    def answer(self, request: web.Request, body: Any) -> web.Response:
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
            return web.Response(status=400, text="not JSON-RPC")
        if body.get("method") != "aster_spotUserFills":
            return _json({"jsonrpc": "2.0", "id": body.get("id"), "error": {"code": -32601, "message": "not found"}})
        wallet, none, start, end, tag = body["params"]
        assert none is None and tag == "latest", body
        chosen = sorted(
            (f for f in self.fills.get(str(wallet).lower(), []) if start <= f["time"] <= end), key=lambda f: f["time"]
        )[: self.CAP]
        return _json({"jsonrpc": "2.0", "id": body["id"], "result": {"fills": chosen[::-1]}})


@dataclass
class FakeEvmNode(_Loopback):
    """`POST /` JSON-RPC of an EVM node: `eth_blockNumber`, `eth_getLogs` (filter by address, topic0 and
    topics[2], a range over `max_range` blocks refused with Infura's code, as Infura refuses a query with too many
    results, research §4) and `eth_getBlockByNumber` (`number`, `hash`, `timestamp` of `block_time`)."""

    head: int = 1000
    max_range: int | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    genesis_s: int = 1_767_225_600  # 2026-01-01T00:00:00Z
    decimals: int = 18
    """What `decimals()` answers by `eth_call`."""
    block_s: int = 12

    def block_time(self, number: int) -> int:
        return self.genesis_s + number * self.block_s

    def transfer(
        self,
        token: str,
        to: str,
        block: int,
        value: int,
        *,
        log_index: int = 0,
        tx: str | None = None,
        removed: bool = False,
        sender: str = "0x" + "11" * 20,
    ) -> dict[str, Any]:
        log = {
            "address": token.lower(),
            "topics": [TRANSFER_TOPIC, "0x" + "0" * 24 + sender[2:], "0x" + "0" * 24 + to[2:].lower()],
            "data": "0x" + format(value, "064x"),
            "blockNumber": hex(block),
            "blockHash": "0x" + format(block, "064x"),
            "transactionHash": tx or "0x" + format(block * 1000 + log_index, "064x"),
            "transactionIndex": "0x0",
            "logIndex": hex(log_index),
            "removed": removed,
        }
        self.logs.append(log)
        return log

    def calls(self, method: str) -> list[Any]:
        return [s.body["params"] for s in self.seen if s.body and s.body.get("method") == method]

    def answer(self, request: web.Request, body: Any) -> web.Response:
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
            return web.Response(status=400, text="not JSON-RPC")
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": body.get("id")}
        method, params = body.get("method"), body.get("params") or []
        if method == "eth_blockNumber":
            reply["result"] = hex(self.head)
        elif method == "eth_getLogs":
            query = params[0]
            start, end = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            if self.max_range is not None and end - start + 1 > self.max_range:
                reply["error"] = {"code": -32005, "message": "query returned more than 10000 results"}
            else:
                topics = query["topics"]
                reply["result"] = [
                    log
                    for log in self.logs
                    if start <= int(log["blockNumber"], 16) <= end
                    and log["address"] == query["address"].lower()
                    and log["topics"][0] == topics[0]
                    and log["topics"][2] == topics[2]
                ]
        elif method == "eth_call" and params[0].get("data") == "0x313ce567":  # decimals()
            reply["result"] = "0x" + format(self.decimals, "064x")
        elif method == "eth_getBlockByNumber":
            number = int(params[0], 16)
            reply["result"] = (
                None
                if number > self.head
                else {
                    "number": hex(number),
                    "hash": "0x" + format(number, "064x"),
                    "timestamp": hex(self.block_time(number)),
                }
            )
        else:
            reply["error"] = {"code": -32601, "message": "the method does not exist"}
        return _json(reply)


@dataclass
class FakeLighterExplorer(_Loopback):
    """`GET /api/accounts/{index}/logs?pub_data_type=Trade&limit=&offset=` (DefiLlama/dimension-adapters:
    fees/lighterv2/index.ts; log shape from https://apidocs.lighter.xyz/reference/logs): `logs` newest first,
    `limit` within the documented bounds (a client error beyond)."""

    logs: list[dict[str, Any]] = field(default_factory=list)
    """Newest first."""

    def trade(
        self,
        time: str,
        price: str,
        size: str,
        *,
        maker: int,
        taker: int,
        is_taker_ask: int,
        market: int = 2049,
        tx: str | None = None,
        with_funding: bool = False,
    ) -> dict[str, Any]:
        """A trade log, prepended (it is the newest)."""
        data = {
            "trade_type": 0,
            "market_index": market,
            "is_taker_ask": is_taker_ask,
            "maker_fee": 20,
            "taker_fee": 200,
            "taker_account_index": taker,
            "maker_account_index": maker,
            "fee_account_index": "0",
            "price": price,
            "size": size,
        }
        kind = "trade_pubdata_with_funding" if with_funding else "trade_pubdata"
        log = {
            "tx_type": "L2CreateOrder",
            "hash": tx or format(len(self.logs) + 1, "064x"),
            "time": time,
            "pubdata": {kind: data},
            "pubdata_type": "TradeWithFunding" if with_funding else "Trade",
            "status": "executed",
        }
        self.logs.insert(0, log)
        return log

    def offsets(self) -> list[int]:
        return [int(s.query["offset"]) for s in self.seen if s.status == 200]

    def answer(self, request: web.Request, body: Any) -> web.Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["api", "accounts"] or parts[3] != "logs":
            return web.Response(status=404, text="no such path")
        query = request.query
        limit, offset = int(query.get("limit", "100")), int(query.get("offset", "0"))
        if not 1 <= limit <= 100 or query.get("pub_data_type") != "Trade":
            return _json({"code": 400, "message": "invalid param"}, 400)
        return _json(self.logs[offset : offset + limit])


@dataclass
class FakeDefiLlama(_Loopback):
    """`GET /summary/fees/{slug}?dataType=dailyHoldersRevenue`: the real Hyperliquid capture with its
    `totalDataChart` and `totalAllTime` settable per slug; an unknown slug answers DefiLlama's client error and text."""

    charts: dict[str, list[list[Any]]] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)

    def answer(self, request: web.Request, body: Any) -> web.Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[:2] != ["summary", "fees"]:
            return web.Response(status=404, text="404 page not found")
        slug = parts[2]
        if slug not in self.charts:
            text = f"Fees for {slug} not found, please visit /overview/fees to see available protocols"
            return web.Response(status=400, text=text)
        if request.query.get("dataType") != "dailyHoldersRevenue":
            return web.Response(status=400, text="this fake answers dataType=dailyHoldersRevenue only")
        summary = load("defillama_summaryFees_hyperliquid_dailyHoldersRevenue_real2026_excerpt.json")
        summary.update(slug=slug, totalDataChart=self.charts[slug])
        if slug in self.totals:
            summary["totalAllTime"] = self.totals[slug]
        return _json(summary)


@dataclass
class Sources:
    """Every buyback source's fake, and the settings that aim the bot at them."""

    info: FakeHyperliquidInfo
    aster: FakeAsterChain
    evm: FakeEvmNode
    lighter: FakeLighterExplorer
    llama: FakeDefiLlama

    def settings(self) -> dict[str, Any]:
        return {
            "hyperliquid_info_url": self.info.url("/info"),
            "aster_chain_rpc_url": self.aster.url("/info"),
            "ethereum_rpc_url": self.evm.url("/"),
            "lighter_explorer_url": self.lighter.url(),
            "defillama_api_url": self.llama.url(),
        }


@asynccontextmanager
async def every_source() -> AsyncIterator[Sources]:
    async with (
        FakeHyperliquidInfo() as info,
        FakeAsterChain() as aster,
        FakeEvmNode() as evm,
        FakeLighterExplorer() as lighter,
        FakeDefiLlama() as llama,
    ):
        yield Sources(info, aster, evm, lighter, llama)
