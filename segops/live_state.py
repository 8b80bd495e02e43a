"""Reading the live tables (membership and its changes, heartbeats, events, dead letters) with
DuckDB, wherever they are kept: in PostgreSQL when SEGOPS_POSTGRES_DSN is set, attached
through DuckDB's postgres extension as the default catalog, so the same SQL reads either store
and nobody waits for a file; else in the warehouse file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from segops.extensions import attach_postgres, duckdb_config
from segops.warehouse import connect


@contextmanager
def read_live_state(warehouse: Path | str, postgres_dsn: str | None, *,
                    timeout: float = 120.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only DuckDB connection whose default catalog holds the live tables."""
    if not postgres_dsn:
        with connect(warehouse, read_only=True, timeout=timeout) as con:
            yield con
        return
    con = duckdb.connect(config=duckdb_config())
    try:
        attach_postgres(con, postgres_dsn, read_only=True)
        con.execute("use live")
        yield con
    finally:
        con.close()
