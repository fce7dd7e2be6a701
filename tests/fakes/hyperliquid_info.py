"""A loopback Hyperliquid `/info` for the whale tests: answers from the documented samples (meta, vaultDetails,
clearinghouseState), with the watched wallet's ETH size settable, and counts weight as the docs give it,
apart from the code under test. `trades_frame` shapes the public trades sample with both users named."""

from __future__ import annotations

import json
import time
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
    """`/info` answering from the documented samples, with the ETH size of WHALE's account settable."""

    def __init__(self) -> None:
        self.eth = "10"
        self.weights: list[tuple[float, int]] = []

    def __call__(self, request: Any) -> Any:
        kind = request["type"]
        self.weights.append((time.monotonic(), DOC_WEIGHTS.get(kind, 20)))
        if kind == "meta":
            return _load("hyperliquid_metaAndAssetCtxs_docs.json")[0]
        if kind == "vaultDetails":
            body = _load("hyperliquid_vaultDetails_docs.json")
            if request["vaultAddress"] != hyperliquid.HLP_VAULT:
                body.update(vaultAddress=request["vaultAddress"], name="HLP Strategy", relationship={"type": "child"})
            return body
        if kind == "perpDexs":
            return [None]
        assert kind == "clearinghouseState" and request["user"] == WHALE, request
        body = _load("hyperliquid_clearinghouseState_docs.json")
        body["time"] = int(time.time() * 1000)
        position = body["assetPositions"][0]["position"]
        position.update(szi=self.eth, positionValue=str(Decimal(self.eth) * 3000), liquidationPx=None)
        return body

    def max_weight_per_min(self) -> int:
        return max((sum(w for t, w in self.weights if start <= t < start + 60) for start, _ in self.weights), default=0)


def trades_frame(tid: int, px: str, sz: str, *, buyer: str = WHALE, seller: str = OTHER) -> str:
    frame = _load("hyperliquid_ws_trades_ccxt.json")
    frame["data"][0].update(coin="ETH", tid=tid, px=px, sz=sz, side="B", time=int(time.time() * 1000))
    frame["data"][0]["users"] = [buyer, seller]
    return json.dumps(frame)
