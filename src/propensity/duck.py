"""DuckDB connections, opened in one place with the project's settings."""

from __future__ import annotations

from pathlib import Path

import duckdb


def connect(database: Path | str = ":memory:", *, threads: int = 2, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with UTC timestamps and a bounded thread count."""
    con = duckdb.connect(str(database), read_only=read_only)
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    return con


def sql_literal(path: Path | str) -> str:
    """A path as a single-quoted SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"
