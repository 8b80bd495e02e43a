"""Reading the live tables (membership and its changes, heartbeats, events, dead letters) with
DuckDB: PostgreSQL attached through DuckDB's postgres extension as the default catalog, so the
membership and history functions run the same SQL as over any DuckDB tables, and a reader never
waits for a writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from segops.extensions import attach_postgres, duckdb_config


@contextmanager
def read_live_state(postgres_dsn: str | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only DuckDB connection whose default catalog holds the live tables."""
    con = duckdb.connect(config=duckdb_config())
    try:
        attach_postgres(con, postgres_dsn, read_only=True)
        con.execute("use live")
        yield con
    finally:
        con.close()
