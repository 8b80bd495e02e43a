"""The DuckLake that holds the dbt models and the events' history when the live state is in
PostgreSQL: Parquet files under `lake_data_path`, cataloged in the same PostgreSQL (schema
`ducklake`), so any number of DuckDB processes read and write it at once, each at a snapshot.

It is attached as `warehouse`, the name the dbt models are compiled against in either mode, and
made the default catalog, so the models' and segments' SQL reads it unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from segops.extensions import duckdb_config, extension_directory
from segops.live_connection import required, unreachable
from segops.settings import Settings
from segops.sql import literal

ALIAS = "warehouse"
METADATA_SCHEMA = "ducklake"
# Every copy's horizon (segops/live_import.py): the events of the transactions below the newest
# are in the lake, those from it on only in PostgreSQL.
FLUSHES = "segops.lake_flushes"
# How long replaced files and expired snapshots are kept: far longer than any read lasts.
RETENTION = "interval 7 day"


def catalog_uri(dsn: str | None) -> str:
    return f"ducklake:postgres:{required(dsn)}"


def run_database(dsn: str | None, data_path: str) -> str:
    """The in-memory DuckDB a Dagster run's steps share, named after the lake, so that the
    run's dbt build in the same process (the profile's path) opens that same database with the
    lake already attached; another lake's run gets a database of its own."""
    lake = hashlib.sha256(f"{catalog_uri(dsn)}\0{data_path}".encode()).hexdigest()[:16]
    return f":memory:segops_lake_{lake}"


def attach_lake(con: duckdb.DuckDBPyConnection, dsn: str, data_path: str, *,
                read_only: bool) -> None:
    """Attach the lake cataloged in PostgreSQL `dsn` as `warehouse` (its extension loaded
    from the wheel), unless this database has it attached already (a run_database opened
    again). The first process to attach creates it, a reader too (empty) rather than fail;
    one that loses that race attaches what the winner created."""
    # no bound parameter: binding a Python value makes DuckDB import pandas (0.2 s of preview)
    if con.execute("select count(*) from duckdb_databases() "
                   f"where database_name = {literal(ALIAS)}").fetchone()[0]:
        return
    con.execute(f"set extension_directory = {literal(str(extension_directory()))}")
    con.execute("load ducklake")
    attach = (f"attach {literal(catalog_uri(dsn))} as {ALIAS} "
              f"(data_path {literal(data_path)}, metadata_schema {literal(METADATA_SCHEMA)}")
    mode = ", read_only)" if read_only else ")"
    try:
        con.execute(attach + mode)
        return
    except duckdb.IOException as error:  # its catalog, PostgreSQL, is not there
        raise unreachable(dsn, error) from None
    except duckdb.InvalidInputException as error:  # a reader finding no lake yet creates it
        if not read_only or "does not exist" not in str(error):
            raise
        con.execute(attach + ")")
        con.execute(f"detach {ALIAS}")
    except duckdb.Error as error:
        if "already exists" not in str(error):  # another process created it meanwhile
            raise
    con.execute(attach + mode)


@contextmanager
def lake_connection(dsn: str, data_path: str, *, read_only: bool = False,
                    database: str = ":memory:") -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB (a new one, or the one this process holds open as `database`)
    whose default catalog is the lake."""
    con = duckdb.connect(database, config=duckdb_config())
    try:
        attach_lake(con, dsn, data_path, read_only=read_only)
        con.execute(f"use {ALIAS}")
        yield con
    finally:
        con.close()


def flushed_horizon(con: duckdb.DuckDBPyConnection) -> int:
    """The transaction id below which every event is in the lake attached to `con`: 0 before
    the first copy."""
    (horizon,) = con.execute(f"select coalesce(max(horizon), 0) from {ALIAS}.{FLUSHES}"
                             ).fetchone()
    return horizon


def dbt_environment(settings: Settings) -> dict[str, str]:
    """What the dbt profile's `lake` target reads from the environment."""
    return {
        "SEGOPS_LAKE_CATALOG": catalog_uri(settings.postgres_dsn),
        "SEGOPS_LAKE_DATA_PATH": settings.lake_data_path,
        "SEGOPS_DUCKDB_EXTENSIONS": str(extension_directory()),
        "SEGOPS_DBT_DATABASE": run_database(settings.postgres_dsn, settings.lake_data_path),
    }


def maintain(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Keep the lake's file count bounded: write the small commits kept inline in the catalog
    out as files, merge small adjacent files, expire snapshots older than RETENTION, delete the
    files no snapshot needs any more. Counts of what was done."""
    lake = literal(ALIAS)
    done = {}
    for what, call in (
        ("inlined_tables_flushed", f"ducklake_flush_inlined_data({lake})"),
        ("files_merged", f"ducklake_merge_adjacent_files({lake})"),
        ("snapshots_expired", f"ducklake_expire_snapshots({lake}, "
                              f"older_than => now() - {RETENTION})"),
        ("files_deleted", f"ducklake_cleanup_old_files({lake}, "
                          f"older_than => now() - {RETENTION})"),
    ):
        done[what] = len(con.execute(f"call {call}").fetchall())
    return done
