"""The loopback Binance/Aster venue lives in `bot.demo_venue`, so the demo runs from a wheel; tests import it
from here as before."""

from bot.demo_venue import FakeForceOrderServer, Frame

__all__ = ["FakeForceOrderServer", "Frame"]
