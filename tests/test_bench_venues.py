"""The venue bench's socket run at a tiny size, so it cannot rot: seven loopback venues through the real
watchers into one pipeline, every pushed frame arriving as one committed event. Figures are not checked."""

from __future__ import annotations

from bench.venues import socket_rate


async def test_every_pushed_frame_arrives_once_through_the_sockets() -> None:
    run = await socket_rate(5)
    assert run.total == sum(run.arrived.values()) == run.accepted == 35
    assert run.duplicates == 0 and not any(run.refused.values())
    assert set(run.arrived) == {"binance", "aster", "bybit", "okx", "lighter", "pacifica", "hyperliquid"}
