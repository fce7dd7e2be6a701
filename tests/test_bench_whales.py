"""`bench/whales.py` at a tiny size, so the bench cannot rot: every wallet seeded, alerts matched to their
frames, weight within the share. Figures are the bench's to print; this checks only that it measures."""

from __future__ import annotations

from bench.whales import run


async def test_the_whale_bench_runs_at_a_tiny_size() -> None:
    result = await run(n_wallets=20, seconds=3.0, frames_per_s=10.0, weight_per_min=1000)
    assert result.all_seeded_s is not None and result.seeded_at_end == 20
    assert result.frames_pushed > 0 and result.latencies_ms and result.unmatched == 0
    assert 0 < result.max_weight_60s <= 1000 and result.reconcile_errors == 0
    assert result.staleness_s and result.rss_peak_mib > 0
