"""What command handlers may reach: the store, settings, watchers and the dispatcher's figures."""

from __future__ import annotations

from dataclasses import dataclass

from bot.dispatcher import DispatchStats
from bot.settings import Settings
from bot.supervisor import Supervisor
from storage import Store


@dataclass
class Services:
    store: Store
    settings: Settings
    supervisor: Supervisor
    dispatch_stats: DispatchStats
