"""What command handlers may reach: the store, settings, watchers, the dispatcher's state and the clock."""

from __future__ import annotations

from dataclasses import dataclass

from bot.dispatch.dispatcher import Dispatcher
from bot.settings import Settings
from bot.supervisor import Supervisor
from perpwatch.clock import Clock
from storage import Store


@dataclass
class Services:
    store: Store
    settings: Settings
    supervisor: Supervisor
    dispatcher: Dispatcher
    clock: Clock
