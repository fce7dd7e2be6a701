"""Both engines' migrations build the same schema, and the repositories' SQL stays in the shared dialect."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from storage import Store
from storage.engine import migration_scripts
from tests.conftest import POSTGRES_URL, postgres_database

ROOT = Path(__file__).resolve().parent.parent

# What a column's type on PostgreSQL may be declared as on SQLite (which has no timestamp or boolean type:
# the text of a fixed ISO form, and 0/1).
_SQLITE_FOR = {"bigint": "INTEGER", "integer": "INTEGER", "text": "TEXT", "timestamp with time zone": "TEXT"}
_SQLITE_FOR["boolean"] = "INTEGER"

Columns = dict[str, dict[str, tuple[str, bool]]]
"""table -> column -> (type, not null)."""


def test_the_engines_have_the_same_migration_versions() -> None:
    sqlite = [(v, name) for v, name, _ in migration_scripts("sqlite")]
    postgresql = [(v, name) for v, name, _ in migration_scripts("postgresql")]
    assert sqlite == postgresql


async def _sqlite_schema(url: str) -> tuple[Columns, set[tuple[str, str, tuple[str, ...], bool]]]:
    async with Store(url) as store:
        db: Any = store.db
        tables = [r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        columns: Columns = {}
        indexes: set[tuple[str, str, tuple[str, ...], bool]] = set()
        for table in tables:
            info = db.conn.execute(f"PRAGMA table_info({table})").fetchall()
            columns[table] = {r[1]: (str(r[2]).upper(), bool(r[3]) or bool(r[5])) for r in info}
            for idx in db.conn.execute(f"PRAGMA index_list({table})").fetchall():
                name, unique, origin = idx[1], bool(idx[2]), idx[3]
                cols = tuple(r[2] for r in db.conn.execute(f"PRAGMA index_info('{name}')").fetchall())
                indexes.add((table, name if origin == "c" else "(constraint)", cols, unique))
        return columns, indexes


async def _postgres_schema(url: str) -> tuple[Columns, set[tuple[str, str, tuple[str, ...], bool]]]:
    async with Store(url) as store:
        rows = await store.db.fetch(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        )
        columns: Columns = {}
        for r in rows:
            columns.setdefault(r[0], {})[r[1]] = (r[2], r[3] == "NO")
        index_rows = await store.db.fetch(
            "SELECT t.relname, i.relname, ix.indisunique, ix.indisprimary, "
            "ARRAY(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY k(n, o) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o) "
            "FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_class i ON i.oid = ix.indexrelid "
            "JOIN pg_namespace ns ON ns.oid = t.relnamespace WHERE ns.nspname = 'public'"
        )
        indexes = set()
        for table, name, unique, primary, cols in index_rows:
            if primary and tuple(cols) in (("id",), ("version",)):
                continue  # SQLite's INTEGER PRIMARY KEY is the rowid, not an index
            own = not (unique and (primary or name.endswith(("_key", "_pkey"))))
            indexes.add((table, name if own else "(constraint)", tuple(cols), bool(unique)))
        return columns, indexes


@pytest.mark.skipif(POSTGRES_URL is None, reason="no PostgreSQL server for this run")
async def test_both_engines_build_the_same_tables_columns_and_indexes(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    lite_columns, lite_indexes = await _sqlite_schema(f"sqlite:///{tmp_path / 's.db'}")
    with postgres_database(POSTGRES_URL) as url:
        pg_columns, pg_indexes = await _postgres_schema(url)
    assert set(lite_columns) == set(pg_columns)
    for table, columns in pg_columns.items():
        assert set(columns) == set(lite_columns[table]), table
        for name, (pg_type, pg_not_null) in columns.items():
            lite_type, lite_not_null = lite_columns[table][name]
            assert _SQLITE_FOR[pg_type] == lite_type, f"{table}.{name}: {pg_type} here, {lite_type} on SQLite"
            assert pg_not_null == lite_not_null, f"{table}.{name}: NOT NULL differs"
    assert pg_indexes == lite_indexes


# SQLite-only SQL that has no place in a repository (the engines' own modules may speak their dialect).
_SQLITE_ONLY = [
    (
        re.compile(r"\b(INSERT|UPDATE)\s+OR\s+(IGNORE|REPLACE)\b", re.I),
        "INSERT/UPDATE OR IGNORE/REPLACE: use ON CONFLICT",
    ),
    (re.compile(r"\blastrowid\b"), "lastrowid: use RETURNING id"),
    (re.compile(r"\b(MAX|MIN)\((?:[^()]|\([^()]*\))*,", re.I), "two-argument MAX/MIN: use CASE"),
    (re.compile(r"\bPRAGMA\b|\bexecutescript\b|\bsqlite_master\b"), "an SQLite statement"),
    (re.compile(r"\b(datetime|strftime|julianday|unixepoch)\(", re.I), "SQLite's date functions"),
    (re.compile(r"\bGREATEST\(|\bLEAST\(|::", re.I), "PostgreSQL-only syntax"),
]


def _sql_literals(path: Path) -> list[str]:
    """The string constants of a module that are SQL (docstrings and comments are not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE)\b", node.value)
    ]


ENGINE_AWARE = ("sqlite", "postgres", "admin", "copy")
"""The engines themselves, and the operator's tools that read each engine's own catalog (its tables and
column types) keyed on `Engine.kind`: every other module is a repository and speaks the shared dialect."""


@pytest.mark.parametrize(
    "path", sorted(p for p in (ROOT / "storage").glob("*.py") if p.stem not in ENGINE_AWARE), ids=lambda p: p.name
)
def test_repositories_speak_only_the_shared_dialect(path: Path) -> None:
    sql = "\n".join(_sql_literals(path))
    for pattern, why in _SQLITE_ONLY:
        found = pattern.search(sql)
        assert found is None, f"{path.name}: {why}: {found.group(0) if found else ''}"


def test_the_dialect_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text('SQL = "INSERT OR IGNORE INTO t SELECT MAX(a, b) FROM u"\n', encoding="utf-8")
    sql = "\n".join(_sql_literals(module))
    assert [why for pattern, why in _SQLITE_ONLY if pattern.search(sql)] == [
        "INSERT/UPDATE OR IGNORE/REPLACE: use ON CONFLICT",
        "two-argument MAX/MIN: use CASE",
    ]
