"""`perpwatch db upgrade | status`: the database named by PERPWATCH_DATABASE_URL, looked after
from the command line. What they cannot do is a StorageStartError: one line, and `perpwatch` exits 1."""

from __future__ import annotations

import os
from typing import TextIO

from storage import open_engine, parse_database_url
from storage.engine import DatabaseUrl


async def upgrade(url: str, out: TextIO) -> None:
    from storage.admin import upgrade as apply

    engine = open_engine(url)
    await engine.open(migrate=False)
    try:
        done = await apply(engine)
    finally:
        await engine.close()
    if not done.applied:
        out.write(f"already at version {done.after}\n")
        return
    for version, name in done.applied:
        out.write(f"applied migration {version} ({name})\n")
    out.write(f"database {engine.display} is at version {done.after}\n")


async def status(url: str, out: TextIO) -> None:
    from storage.admin import COUNTED, DatabaseStatus, database_status, pending_migrations, release_version

    parsed = parse_database_url(url)
    if _missing_file(parsed):  # opening would create it: a status looks, it does not create
        kind = parsed.kind
        shown = DatabaseStatus(kind, parsed.masked, 0, release_version(kind), pending_migrations(kind, 0))
    else:
        engine = open_engine(url)
        await engine.open(migrate=False)
        try:
            shown = await database_status(engine)
        finally:
            await engine.close()
    if shown.version > shown.release:
        version = f"{shown.version} (newer than this release's {shown.release})"
    elif shown.version == 0:
        version = "0 (no perpwatch tables yet: `perpwatch db upgrade` or the bot's start creates them)"
    else:
        version = str(shown.version)
    out.write(f"engine: {shown.kind}\n")
    out.write(f"database: {shown.display}\n")
    out.write(f"schema version: {version}\n")
    pending = ", ".join(name for _v, name in shown.pending) or "none"
    out.write(f"pending migrations: {pending}\n")
    for name in COUNTED:
        out.write(f"{name}: {shown.counts[name]:,}\n" if shown.counts is not None else f"{name}: -\n")


def _missing_file(url: DatabaseUrl) -> bool:
    return url.kind == "sqlite" and url.path != ":memory:" and not os.path.exists(url.path)
