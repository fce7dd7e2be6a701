"""Per-watcher state that outlives the process: paused by an operator, and each watcher's own key/value state
(cursors, the last good copy of its reference data).

Values are JSON text. Decimals are written as JSON numbers in their exact text and read back as `Decimal`
(`json.loads(parse_float=Decimal)`), so a venue body stored as the last good copy parses the same way on a
later start as it did when it was fetched; `float` would have rounded it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.engine import Engine


def encode_json(value: Any) -> str:
    """JSON text of `value`, with decimals as exact numbers; NaN and infinities are refused (not JSON)."""
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _encode(value: Any, out: list[str]) -> None:
    if value is None or isinstance(value, bool | str | int):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        out.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        out.append(repr(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be text, not {type(key).__name__}")
            out.append(("," if i else "") + json.dumps(key, ensure_ascii=False) + ":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON")


def decode_json(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


class WatcherStateRepo:
    def __init__(self, db: Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def set_paused(self, watcher: str, paused: bool) -> None:
        await self.db.execute(
            "INSERT INTO watcher_state (watcher, paused, updated_at) VALUES (?,?,?) "
            "ON CONFLICT (watcher) DO UPDATE SET paused=excluded.paused, updated_at=excluded.updated_at",
            (watcher, paused, self.clock.now()),
        )

    async def paused(self) -> set[str]:
        return {r[0] for r in await self.db.fetch("SELECT watcher FROM watcher_state WHERE paused")}

    # --- key/value state (watchers.runtime.KeyValueStore) --------------------------------------------
    async def get_value(self, watcher: str, key: str) -> Any | None:
        """The stored value, or None when there is none (a stored JSON null reads as None too)."""
        row = await self.db.fetchone("SELECT value FROM watcher_kv WHERE watcher = ? AND key = ?", (watcher, key))
        return None if row is None else decode_json(row[0])

    async def put_value(self, watcher: str, key: str, value: Any) -> None:
        text = encode_json(value)  # before the statement: a value that is not JSON never half-writes
        await self.db.execute(
            "INSERT INTO watcher_kv (watcher, key, value, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT (watcher, key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (watcher, key, text, self.clock.now()),
        )

    async def delete_value(self, watcher: str, key: str) -> None:
        await self.db.execute("DELETE FROM watcher_kv WHERE watcher = ? AND key = ?", (watcher, key))

    async def values(self, watcher: str) -> dict[str, Any]:
        """Every key of one watcher, for `/status`-style inspection and tests."""
        rows = await self.db.fetch("SELECT key, value FROM watcher_kv WHERE watcher = ? ORDER BY key", (watcher,))
        return {str(r[0]): decode_json(r[1]) for r in rows}
