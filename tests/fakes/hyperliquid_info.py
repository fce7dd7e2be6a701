"""A loopback Hyperliquid `/info` for the whale tests: answers from the documented samples (meta, vaultDetails,
clearinghouseState), with the watched wallet's ETH size settable, and counts weight as the docs give it,
apart from the code under test. `trades_frame` shapes the public trades sample with both users named.

Given `sizes` (user -> signed ETH size), it answers `clearinghouseState` for any user instead (the whale
bench's many wallets), and their fills and ledger as empty."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from watchers import hyperliquid

PAYLOADS = Path(__file__).resolve().parents[3] / "shared" / "payloads"
WHALE = "0x15f43d1f2dee81424afd891943262aa90f22cc2a"  # the user of the ccxt userFills sample
OTHER = "0x" + "ab" * 20


def _load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


# The info API's weights as its docs give them (research §1.4), kept here apart from the code under test:
# clearinghouseState 2; perpDexs, meta, vaultDetails, userFillsByTime, ledger updates 20.
DOC_WEIGHTS = {"clearinghouseState": 2}


class FakeInfo:
    """`/info` answering from the documented samples. WHALE's account: `eth` (its ETH size at mark 3000) with
    `liquidation_px`, and on each HIP-3 dex in `dexes` the positions of `dex_positions`; `fills` and
    `ledger` answer `userFillsByTime` and `userNonFundingLedgerUpdates` (items in the documented shapes).
    With `sizes` (user -> signed ETH size) any user is answered (the whale bench's many wallets), their
    fills and ledger empty."""

    def __init__(self, sizes: Callable[[str], Decimal] | None = None) -> None:
        self.eth = "10"
        self.sizes = sizes
        self.liquidation_px: str | None = None
        self.dexes: list[str] = []
        self.dex_positions: dict[str, list[tuple[str, str]]] = {}
        self.fills: list[dict[str, Any]] = []
        self.ledger: list[dict[str, Any]] = []
        self.weights: list[tuple[float, int]] = []
        self.requests: list[tuple[float, str, int]] = []
        """(monotonic time, request type, weight) of every request."""
        self.asked: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        kind = request["type"]
        at, weight = time.monotonic(), DOC_WEIGHTS.get(kind, 20)
        self.weights.append((at, weight))
        self.requests.append((at, kind, weight))
        if self.sizes is None:  # the bench asks thousands of times: only the tests keep every request
            self.asked.append(request)
        if kind == "meta" and request.get("dex"):  # a HIP-3 dex's universe names its coins `dex:COIN` (§8.5)
            template = _load("hyperliquid_metaAndAssetCtxs_docs.json")[0]["universe"][0]
            coins = [coin for coin, _ in self.dex_positions.get(request["dex"], [])]
            return {"universe": [dict(template, name=coin) for coin in coins]}
        if kind == "meta":
            return _load("hyperliquid_metaAndAssetCtxs_docs.json")[0]
        if kind == "vaultDetails":
            body = _load("hyperliquid_vaultDetails_docs.json")
            if request["vaultAddress"] != hyperliquid.HLP_VAULT:
                body.update(vaultAddress=request["vaultAddress"], name="HLP Strategy", relationship={"type": "child"})
            return body
        if kind == "perpDexs":
            return [None, *({"name": d, "fullName": d, "deployer": OTHER} for d in self.dexes)]
        if kind == "userFillsByTime":
            return [f for f in self.fills if f["time"] >= request["startTime"]]
        if kind == "userNonFundingLedgerUpdates":
            return [u for u in self.ledger if u["time"] >= request["startTime"]]
        assert kind == "clearinghouseState" and (self.sizes is not None or request["user"] == WHALE), request
        body = _clearinghouse()
        body["time"] = int(time.time() * 1000)
        template = body["assetPositions"].pop()
        dex = request.get("dex", "")
        eth = self.eth if self.sizes is None else str(self.sizes(str(request["user"])))
        held = [("ETH", eth)] if not dex else self.dex_positions.get(dex, [])
        for coin, szi in held:
            if Decimal(szi) == 0:
                continue
            entry = json.loads(json.dumps(template))
            liq = self.liquidation_px if not dex else None
            entry["position"].update(coin=coin, szi=szi, positionValue=str(abs(Decimal(szi)) * 3000), liquidationPx=liq)
            body["assetPositions"].append(entry)
        return body

    def max_weight_per_min(self) -> int:
        return max((sum(w for t, w in self.weights if start <= t < start + 60) for start, _ in self.weights), default=0)


_CLEARINGHOUSE: list[str] = []


def _clearinghouse() -> Any:
    """A fresh copy of the clearinghouseState sample (read from disk once: the bench asks thousands of times)."""
    if not _CLEARINGHOUSE:
        _CLEARINGHOUSE.append((PAYLOADS / "hyperliquid_clearinghouseState_docs.json").read_text(encoding="utf-8"))
    return json.loads(_CLEARINGHOUSE[0])


def trades_frame(tid: int, px: str, sz: str, *, buyer: str = WHALE, seller: str = OTHER, coin: str = "ETH") -> str:
    frame = _load("hyperliquid_ws_trades_ccxt.json")
    frame["data"][0].update(coin=coin, tid=tid, px=px, sz=sz, side="B", time=int(time.time() * 1000))
    frame["data"][0]["users"] = [buyer, seller]
    return json.dumps(frame)
