"""A shop's live state copied into PostgreSQL: how a shop that ran on the single file, or a
generated demo shop, starts the stream on PostgreSQL with its history.

DuckDB's postgres extension, from its wheel, writes through PostgreSQL's COPY.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from segops.errors import SegOpsError
from segops.extensions import attach_postgres, duckdb_config
from segops.live_columns import COPIED
from segops.live_connection import connect
from segops.live_schema import ensure_live_schema
from segops.sql import literal


def copy_to_postgres(warehouse: Path, dsn: str, *, if_empty: bool = False) -> dict[str, int]:
    """Copy the warehouse file's customers, traits, events and membership into empty live
    tables; the rows copied per table. Refuses to copy over rows already there, or with
    `if_empty` copies nothing."""
    con = duckdb.connect(config=duckdb_config())
    try:
        con.execute(f"attach {literal(str(warehouse))} as warehouse (read_only)")
        return copy_catalog_to_postgres(con, "warehouse", dsn, if_empty=if_empty)
    finally:
        con.close()


def occupied_tables(dsn: str) -> list[str]:
    """The live tables that already hold rows (their schema created if missing)."""
    with connect(dsn) as pg:
        ensure_live_schema(pg)
        return [table for table in COPIED
                if pg.execute(f"select exists (select from {table})").fetchone()[0]]


def copy_catalog_to_postgres(con: duckdb.DuckDBPyConnection, catalog: str, dsn: str, *,
                             if_empty: bool = False, adding: bool = False) -> dict[str, int]:
    """`copy_to_postgres` from catalog `catalog` of `con` (a generated shop in memory, an
    attached file); with `adding`, beside the rows there (the next part of a shop)."""
    occupied = [] if adding else occupied_tables(dsn)
    if occupied and if_empty:
        return {}
    if occupied:
        raise SegOpsError(f"PostgreSQL already holds rows in {', '.join(occupied)}")
    attach_postgres(con, dsn, read_only=False)
    copied = {}
    for table, columns in COPIED.items():
        names = ", ".join(columns)
        con.execute(f"insert into live.{table} ({names}) select {names} from {catalog}.{table}")
        copied[table] = con.execute(f"select count(*) from {catalog}.{table}").fetchone()[0]
    con.execute("detach live")
    with connect(dsn, autocommit=True) as pg:
        # new changes are numbered after the copied ones
        pg.execute("select setval(pg_get_serial_sequence('segops.segment_membership_changes', "
                   "'change_id'), coalesce(max(change_id), 0) + 1, false) "
                   "from segops.segment_membership_changes")
        # the planner's statistics and the visibility map for what was just bulk-loaded, now
        # rather than whenever autovacuum gets to it (meanwhile every reader plans blind)
        pg.execute(f"vacuum analyze {', '.join(COPIED)}")
    return copied
