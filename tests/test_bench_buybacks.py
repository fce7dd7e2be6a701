"""`bench/buybacks.py` at a tiny size, so the bench cannot rot: three days of every default programme recorded
and read back, on both engines. Figures are the bench's to print; this checks only that it measures."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bench.buybacks import programmes, report, run
from perpwatch.buybacks import KINDS
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.engines


async def test_the_buyback_bench_runs_at_a_tiny_size(engine: str) -> None:
    if engine == "postgresql" and POSTGRES_URL is None:
        pytest.skip("no PostgreSQL server for this run (PERPWATCH_TEST_POSTGRES_URL is unset)")
    result = await run(days=3, server=POSTGRES_URL if engine == "postgresql" else None, runs=1)
    ids = [p.id for p in programmes()]
    assert {p.kind for p in programmes()} == set(KINDS)  # every kind's cadence is measured
    assert list(result.buys) == ids and all(result.buys[pid] > 0 for pid in ids)
    assert result.snapshots["hyperliquid-af"] == result.steps["hyperliquid-af"] > 800  # one every 300 s
    assert result.buys["hyperliquid-llama"] == 3 and result.all_tokens["hyperliquid-llama"] is None
    assert all(isinstance(result.all_tokens[pid], Decimal) for pid in ids if pid != "hyperliquid-llama")
    assert all(result.png_bytes[pid] > 10_000 for pid in ids) and result.storage_bytes > 0
    lines = report(result)
    assert lines[0] == f"engine: {engine}, 3 days of history ending 2026-12-01" and len(lines) == 3 + len(ids) + 2
