"""What `perpwatch db` reads of a database and does to it: the schema version it is at, the migrations it
lacks, its size in rows, and an upgrade. Copying one database into another is `storage.copy`.

These read a database that may be older than this release, or not a perpwatch database yet, so they ask the
engine's catalogue what exists instead of assuming the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from storage.engine import Engine, Params, Row, StorageStartError, StorageUnavailable, migration_scripts

_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    "postgresql": (
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    ),
}

COUNTED = ("chats", "subscriptions", "events", "pending deliveries")
"""What `perpwatch db status` counts, in its order."""


class Reader(Protocol):
    """An open engine, or one transaction of one: both fetch."""

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]: ...


async def table_names(db: Reader, kind: str) -> set[str]:
    """The tables the database has (perpwatch's or not)."""
    return {str(r[0]) for r in await db.fetch(_TABLES[kind])}


async def schema_version(db: Reader, kind: str) -> int:
    """The version its migrations reached: 0 for a database no perpwatch has migrated yet."""
    if "schema_version" not in await table_names(db, kind):
        return 0
    rows = await db.fetch("SELECT COALESCE(MAX(version), 0) FROM schema_version")
    return int(rows[0][0])


def release_version(kind: str) -> int:
    """The version this release's migrations bring the engine to."""
    return max(version for version, _name, _sql in migration_scripts(kind))


def pending_migrations(kind: str, version: int) -> list[tuple[int, str]]:
    """(version, file name) of this release's migrations a database at `version` lacks, in order."""
    return [(v, name) for v, name, _sql in migration_scripts(kind) if v > version]


@dataclass(frozen=True)
class DatabaseStatus:
    kind: str
    display: str
    version: int
    release: int
    """The version this release migrates to."""
    pending: list[tuple[int, str]] = field(default_factory=list)
    counts: Mapping[str, int] | None = None
    """By the names in `COUNTED`; None when the database has no perpwatch schema yet."""


async def database_status(engine: Engine) -> DatabaseStatus:
    """The open engine's version, what it lacks, and its rows. The counts visit whole tables, off the loop."""
    version = await schema_version(engine, engine.kind)
    counts: dict[str, int] | None = None
    if version > 0:
        [row] = await engine.fetch_slow(
            "SELECT (SELECT COUNT(*) FROM chats), (SELECT COUNT(*) FROM subscriptions), "
            "(SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM deliveries WHERE status = 'pending')"
        )
        counts = {name: int(row[i]) for i, name in enumerate(COUNTED)}
    return DatabaseStatus(
        kind=engine.kind,
        display=engine.display,
        version=version,
        release=release_version(engine.kind),
        pending=pending_migrations(engine.kind, version),
        counts=counts,
    )


@dataclass(frozen=True)
class Upgrade:
    before: int
    after: int
    applied: list[tuple[int, str]]
    """(version, file name) of each migration applied, in order."""


async def upgrade(engine: Engine) -> Upgrade:
    """Apply the open engine's pending migrations (the engine opened with `migrate=False`). A database newer
    than this release is refused: this release cannot tell what its schema means."""
    before = await schema_version(engine, engine.kind)
    release = release_version(engine.kind)
    if before > release:
        raise StorageStartError(
            f"database {engine.display} is at schema version {before}, newer than this release knows ({release}): "
            "run the perpwatch release that migrated it, or a newer one"
        )
    names = dict(pending_migrations(engine.kind, before))
    try:
        applied = await engine.migrate()
    except (StorageStartError, StorageUnavailable):
        raise
    except Exception as exc:  # a migration the database refused: one line, nothing of that migration stays
        raise StorageStartError(
            f"database {engine.display} could not be migrated (each migration applied before this one stays): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    after = await schema_version(engine, engine.kind)
    return Upgrade(before=before, after=after, applied=[(v, names.get(v, f"{v:04d}")) for v in applied])
