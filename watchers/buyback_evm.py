"""A buyback read as ERC-20 `Transfer`s into a wallet on an EVM chain (edgeX's EDGE buyback wallet, an Aster
BSC wallet): what DefiLlama's `addTokensReceived` counts (DefiLlama/dimension-adapters:fees/edgex/index.ts,
fees/aster-spot/index.ts).

Wire shapes (research/unlocks-buybacks-tge.md §4): `eth_getLogs` with `{fromBlock, toBlock, address: token,
topics: [Transfer topic0, null, wallet left-padded to 32 bytes]}`, logs of `{address, topics, data (uint256
value), blockNumber, blockHash, transactionHash, transactionIndex, logIndex, removed}` (docs.base.org
eth_getLogs reference); `eth_blockNumber` → hex quantity; `eth_getBlockByNumber(hex, false)` → a block whose
`timestamp` is a hex quantity of Unix seconds (Ethereum JSON-RPC spec).

Why chunks that shrink: providers cap a log query by block range or by result count (Alchemy by range, Infura by
result count, QuickNode by a small range on free plans; research §4), and a public RPC's
limit is not announced in advance. A range error halves the chunk, and the halved chunk is stored in the cursor
so the next step does not hit the same error again.

Why confirmations: a log of a block near the head can be reorged away; only blocks at least `confirmations`
below the head are read, and a log still marked `removed: true` is dropped. The cursor is the last block whose
logs were all counted, so a step that fails counts nothing and the range is read again.

USD is None: a transfer carries no price, and valuing it at a later price would be an estimate that belongs to
the report, not to the measured inflow.

Default RPC URLs: BSC `https://bsc-dataseed.bnbchain.org` and Arbitrum `https://arb1.arbitrum.io/rpc` (research
§4, from docs.bnbchain.org and docs.arbitrum.io); Ethereum `https://ethereum.publicnode.com`, PublicNode
(Allnodes) being listed by ethereum.org's developer tools as "free Ethereum RPC endpoints that need no API key"
(https://ethereum.org/developers/tools/publicnode-allnodes/), at the URL the chain registry lists
(ethereum-lists/chains:_data/chains/eip155-1.json; also https://alchemy.com/node-providers/public-node). BNB
Chain's own endpoints disable `eth_getLogs` (research §4): on BSC `bsc_rpc_url` must be set to a provider that
serves logs, or every step fails with the node's error.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from perpwatch.buybacks import Buy, Fetched, ProgrammeKind, SourceContext
from watchers.poller import Request

DEFAULT_URLS: dict[str, str] = {
    "ethereum_rpc_url": "https://ethereum.publicnode.com",
    "bsc_rpc_url": "https://bsc-dataseed.bnbchain.org",
    "arbitrum_rpc_url": "https://arb1.arbitrum.io/rpc",
}

DECIMALS_SELECTOR = "0x313ce567"
"""`decimals()` (research §4, computed locally there)."""

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
"""keccak-256 of `Transfer(address,address,uint256)` (research §4, computed locally there)."""

RANGE_ERROR_CODES = frozenset({-32005})
"""Infura's code for a query with too many results (research §4)."""
_RANGE_WORDS = ("range", "more than", "results")
"""Words of the range errors the research quotes (Alchemy's block range, Infura's result count): other
providers say it in words, without a shared code."""

MAX_SHRINKS = 6
"""Range errors one step answers by halving before it stores the narrower chunk and ends."""

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_QUANTITY = re.compile(r"^0x(0|[1-9a-fA-F][0-9a-fA-F]*)$")
_WORD = re.compile(r"^0x[0-9a-fA-F]{64}$")
_PARAMS = ("rpc", "token", "wallet", "decimals", "from_block", "confirmations", "chunk")
_ids = itertools.count(1)


class RpcError(Exception):
    """A JSON-RPC `error` answer: the node answered, and refused."""

    def __init__(self, method: str, code: object, message: str) -> None:
        super().__init__(f"{method} error {code}: {message[:200]}")
        self.code = code
        self.message = message

    @property
    def range_too_large(self) -> bool:
        if self.code in RANGE_ERROR_CODES:
            return True
        text = self.message.lower()
        return any(word in text for word in _RANGE_WORDS)


def quantity(value: object, name: str) -> int:
    """A JSON-RPC quantity: hex, no leading zeros (the spec's encoding)."""
    if not isinstance(value, str) or not _QUANTITY.match(value):
        raise ValueError(f"{name}={str(value)[:80]!r} is not a hex quantity")
    return int(value, 16)


def _padded(address: str) -> str:
    return "0x" + "0" * 24 + address[2:].lower()


def _int_param(params: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {str(value)[:60]!r}")
    return value


def result_of(body: object, method: str) -> Any:
    """The `result` of a JSON-RPC answer; its `error` raised as `RpcError`."""
    if not isinstance(body, dict):
        raise ValueError(f"{method} answer is not a JSON-RPC object: {str(body)[:120]}")
    error = body.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise ValueError(f"{method} error is not an object: {str(error)[:120]}")
        raise RpcError(method, error.get("code"), str(error.get("message", "")))
    if "result" not in body:
        raise ValueError(f"{method} answer has neither result nor error: {str(body)[:120]}")
    return body["result"]


def parse_log(raw: object, token: str, wallet: str, first: int, last: int) -> dict[str, Any] | None:
    """One Transfer log into `wallet`, or None when the node marks it `removed` (reorged away).

    A log of another contract, event or recipient, or outside the blocks asked for, is refused: the filter
    asked for none, and counting one would count a transfer that is not the programme's."""
    if not isinstance(raw, dict):
        raise ValueError(f"log is not an object: {str(raw)[:120]}")
    removed = raw.get("removed", False)
    if not isinstance(removed, bool):
        raise ValueError(f"log removed={removed!r} is not a boolean")
    if removed:
        return None
    address = raw.get("address")
    if not isinstance(address, str) or address.lower() != token:
        raise ValueError(f"log address={str(address)[:60]!r} is not the token {token}")
    topics = raw.get("topics")
    if not isinstance(topics, list) or len(topics) != 3 or not all(isinstance(t, str) for t in topics):
        raise ValueError(f"log topics={str(topics)[:200]} are not Transfer's three")
    if topics[0].lower() != TRANSFER_TOPIC or topics[2].lower() != _padded(wallet):
        raise ValueError(f"log topics={str(topics)[:200]} are not a Transfer to {wallet}")
    data = raw.get("data")
    if not isinstance(data, str) or not _WORD.match(data):
        raise ValueError(f"log data={str(data)[:80]!r} is not one uint256")
    block = quantity(raw.get("blockNumber"), "log blockNumber")
    if not first <= block <= last:
        raise ValueError(f"log blockNumber={block} is outside the range asked for {first}..{last}")
    tx = raw.get("transactionHash")
    if not isinstance(tx, str) or not _HASH.match(tx):
        raise ValueError(f"log transactionHash={str(tx)[:80]!r} is not a hash")
    index = quantity(raw.get("logIndex"), "log logIndex")
    return {"block": block, "tx": tx.lower(), "index": index, "value": int(data, 16)}


def units(raw: int, decimals: int) -> Decimal:
    """Raw token units as tokens, exactly: a Decimal division would round a large uint256 to the context's precision."""
    return Decimal((0, tuple(int(d) for d in str(raw)), -decimals))


def block_time(block: object, number: int) -> datetime:
    """When a block was made, from `eth_getBlockByNumber` (null for a block the node does not have)."""
    if not isinstance(block, dict):
        raise ValueError(f"eth_getBlockByNumber({number}) answered {str(block)[:80]}, not a block")
    if quantity(block.get("number"), "block number") != number:
        raise ValueError(f"eth_getBlockByNumber({number}) answered block {block.get('number')}")
    return datetime.fromtimestamp(quantity(block.get("timestamp"), "block timestamp"), tz=UTC)


class EvmErc20Inflow:
    """`evm_erc20_inflow`: tokens of one ERC-20 contract received by one wallet."""

    kind: ProgrammeKind = "evm_erc20_inflow"

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise ValueError(f"unknown parameter {', '.join(unknown)}; this kind takes {', '.join(_PARAMS)}")
        rpc = params.get("rpc")
        if rpc not in DEFAULT_URLS:
            raise ValueError(f"rpc must name one of the settings {', '.join(DEFAULT_URLS)}, got {str(rpc)[:60]!r}")
        out: dict[str, Any] = {"rpc": rpc}
        for name in ("token", "wallet"):
            value = params.get(name)
            if not isinstance(value, str) or not _ADDRESS.match(value):
                raise ValueError(f"{name} must be a 0x address, got {str(value)[:60]!r}")
            out[name] = value.lower()
        # Neither is needed: without `decimals` the token's own `decimals()` is read once (a figure typed from
        # memory would scale every amount wrongly), and without `from_block` counting starts at the confirmed
        # head on the first step (no block is guessed from a date; the totals say "counted only since").
        out["decimals"] = _int_param(params, "decimals", None, 0, 36) if params.get("decimals") is not None else None
        out["from_block"] = (
            _int_param(params, "from_block", None, 0, 10**12) if params.get("from_block") is not None else None
        )
        out["confirmations"] = _int_param(params, "confirmations", 12, 0, 10_000)
        out["chunk"] = _int_param(params, "chunk", 2000, 1, 1_000_000)
        return out

    async def fetch(self, ctx: SourceContext) -> Fetched:
        p = self.validate(ctx.programme.params)
        url = ctx.urls.get(p["rpc"], DEFAULT_URLS[p["rpc"]])
        head = quantity(await self._call(ctx, url, "eth_blockNumber", []), "eth_blockNumber")
        safe = head - p["confirmations"]
        if ctx.cursor is None and p["from_block"] is None:
            return Fetched(buys=(), cursor={"block": safe, "chunk": p["chunk"]})
        done, chunk = self._cursor(ctx.cursor, p["from_block"] or 0, p["chunk"])
        decimals = await self._decimals(ctx, url, p)
        if done >= safe:
            return Fetched(buys=(), cursor={"block": done, "chunk": chunk, "decimals": decimals})
        first = done + 1
        for _ in range(MAX_SHRINKS):
            last = min(first + chunk - 1, safe)
            query = {
                "fromBlock": hex(first),
                "toBlock": hex(last),
                "address": p["token"],
                "topics": [TRANSFER_TOPIC, None, _padded(p["wallet"])],
            }
            try:
                logs = await self._call(ctx, url, "eth_getLogs", [query])
                break
            except RpcError as exc:
                if not exc.range_too_large or last == first:
                    raise
                chunk = max(1, (last - first + 1) // 2)
        else:
            return Fetched(buys=(), cursor={"block": done, "chunk": chunk, "decimals": decimals}, more=True)
        if not isinstance(logs, list):
            raise ValueError(f"eth_getLogs result is not a list: {str(logs)[:120]}")
        transfers = [t for raw in logs if (t := parse_log(raw, p["token"], p["wallet"], first, last)) is not None]
        times: dict[int, datetime] = {}
        for number in sorted({t["block"] for t in transfers}):
            block = await self._call(ctx, url, "eth_getBlockByNumber", [hex(number), False])
            times[number] = block_time(block, number)
        buys: dict[str, Buy] = {}
        for t in transfers:
            key = f"{t['tx']}:{t['index']}"
            at = times[t["block"]]
            tokens = units(t["value"], decimals)
            buys[key] = Buy(key=key, start=at, end=at, tokens=tokens, usd=None, basis="measured")
        cursor = {"block": last, "chunk": chunk, "decimals": decimals}
        return Fetched(buys=list(buys.values()), cursor=cursor, more=last < safe)

    async def _decimals(self, ctx: SourceContext, url: str, p: Mapping[str, Any]) -> int:
        """The programme's `decimals`, else the one read before (in the cursor), else the token's
        `decimals()` (selector 0x313ce567, research §4) by `eth_call`."""
        if p["decimals"] is not None:
            return int(p["decimals"])
        stored = ctx.cursor.get("decimals") if isinstance(ctx.cursor, dict) else None
        if isinstance(stored, int) and not isinstance(stored, bool) and 0 <= stored <= 36:
            return stored
        raw = await self._call(ctx, url, "eth_call", [{"to": p["token"], "data": DECIMALS_SELECTOR}, "latest"])
        if not isinstance(raw, str) or not _WORD.match(raw):
            raise ValueError(f"decimals() of {p['token']} answered {str(raw)[:80]!r}, not one 32-byte word")
        value = int(raw, 16)
        if value > 36:
            raise ValueError(f"decimals() of {p['token']} is {value}: no ERC-20 token has that many")
        return value

    @staticmethod
    async def _call(ctx: SourceContext, url: str, method: str, params: list[Any]) -> Any:
        body = await ctx.get_json(
            Request(url, "POST", json_body={"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params})
        )
        return result_of(body, method)

    @staticmethod
    def _cursor(cursor: object, from_block: int, chunk: int) -> tuple[int, int]:
        if cursor is None:
            return from_block - 1, chunk
        if not isinstance(cursor, dict):
            raise ValueError(f"stored cursor {str(cursor)[:80]} is not an evm_erc20_inflow cursor")
        block, stored = cursor.get("block"), cursor.get("chunk", chunk)
        if isinstance(block, bool) or not isinstance(block, int) or block < -1:
            raise ValueError(f"stored cursor block={block!r} is not a block number")
        if isinstance(stored, bool) or not isinstance(stored, int) or stored < 1:
            raise ValueError(f"stored cursor chunk={stored!r} is not a chunk size")
        return block, min(stored, chunk)


SOURCE = EvmErc20Inflow()
