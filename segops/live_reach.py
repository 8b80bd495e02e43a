"""What preview and diff evaluate a segment against, so the reach they show is live.

An in-memory DuckDB that layers the lake and PostgreSQL so the compiled SQL reads, unchanged,
- `raw.events` as the lake's history plus the tail PostgreSQL holds beyond it: the events of
  the transactions from the horizon the lake's last copy recorded on (segops/live_import.py),
  which the lake does not hold, so the two never overlap,
- profiles, trait history and membership from PostgreSQL, where the stream keeps them,
- the models dbt builds as views (staging) over those, from their compiled SQL, and every
  table model (nightly segments, marts) from the lake, at the snapshot the attach took.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from graphlib import TopologicalSorter

import duckdb

from segops.catalog import Catalog, Model, relation_parts
from segops.dbt import compile_segments
from segops.extensions import attach_postgres, duckdb_config
from segops.lake import ALIAS, attach_lake, flushed_horizon
from segops.live_columns import COPIED
from segops.settings import Settings
from segops.sql import literal, tables_read, without_database

# Read from PostgreSQL as they are: they change in place, and the stream keeps them there.
FROM_POSTGRES = ("raw.customers", "raw.customer_traits", "segops.segment_membership")


def open_soon(settings: Settings) -> Future[duckdb.DuckDBPyConnection]:
    """Start attaching the lake and PostgreSQL in a thread, for a command to call before its
    imports and compilation: DuckDB checks its extensions' signatures (0.15 s) with the GIL
    released, so the two overlap."""
    pool = ThreadPoolExecutor(max_workers=1)
    opening = pool.submit(_opened, settings)
    pool.shutdown(wait=False)
    return opening


@contextmanager
def read_segment_inputs(settings: Settings, reads: Iterable[str] = (), *,
                        opening: Future[duckdb.DuckDBPyConnection] | None = None,
                        ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only view of everything the SQL in `reads` can read, live (every model when
    `reads` is empty); `opening` is `open_soon`'s."""
    con = opening.result() if opening is not None else _opened(settings)
    try:
        _lay_models(con, _compiled_catalog(settings), tuple(reads))
        yield con
    finally:
        con.close()


def _opened(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The lake and PostgreSQL attached, and the raw tables and membership laid over them:
    all a command can do before it knows what its SQL reads."""
    con = duckdb.connect(config=duckdb_config())
    try:
        attach_lake(con, settings.postgres_dsn, settings.lake_data_path, read_only=True)
        attach_postgres(con, settings.postgres_dsn, read_only=True)
        con.execute("create schema raw; create schema segops")
        con.execute(f"create view raw.events as {_events(con)}")
        for table in FROM_POSTGRES:  # the warehouse's columns, not PostgreSQL's own
            con.execute(f"create view {table} as "
                        f"select {', '.join(COPIED[table])} from live.{table}")
    except BaseException:
        con.close()
        raise
    return con


def _compiled_catalog(settings: Settings) -> Catalog:
    """The manifest with the view models' compiled SQL, which the layout is made of: after a
    bare `dbt parse` it has none, so the segments and what they read are compiled first (in
    memory, as the stream does)."""
    catalog = Catalog.load(settings.manifest_path)
    if any(m.compiled_sql is None for m in _view_models(catalog).values()):
        compile_segments(settings)
        catalog = Catalog.load(settings.manifest_path)
    return catalog


def _view_models(catalog: Catalog) -> dict[str, Model]:
    return {m.unique_id: m for m in catalog.nodes.values()
            if m.resource_type == "model" and m.materialized == "view" and m.relation}


def _read_by(views: dict[str, Model], reads: tuple[str, ...]) -> dict[str, Model]:
    """The view models the SQL in `reads` names, with the view models those read in turn."""
    if not reads:
        return views
    by_name = {tuple(part.lower() for part in relation_parts(m.relation)): uid
               for uid, m in views.items()}
    wanted = [by_name[table] for sql in reads for table in tables_read(sql) if table in by_name]
    needed: dict[str, Model] = {}
    while wanted:
        uid = wanted.pop()
        if uid not in needed:
            needed[uid] = views[uid]
            wanted.extend(d for d in views[uid].depends_on if d in views)
    return needed


def _lay_models(con: duckdb.DuckDBPyConnection, catalog: Catalog,
                reads: tuple[str, ...]) -> None:
    """The view models `reads` needs over the raw tables, and a search path that finds them
    first and the lake's tables next."""
    views = _read_by(_view_models(catalog), reads)
    order = TopologicalSorter({uid: [d for d in m.depends_on if d in views]
                               for uid, m in views.items()}).static_order()
    for uid in order:
        schema = views[uid].relation.split(".")[0]
        con.execute(f"create schema if not exists {schema}")
        con.execute(f"create view {views[uid].relation} as "
                    f"{without_database(views[uid].compiled_sql)}")
    mine = [row[0] for row in con.execute(
        "select schema_name from duckdb_schemas() where database_name = 'memory'").fetchall()]
    lakes = [row[0] for row in con.execute(
        f"select schema_name from duckdb_schemas() where database_name = {literal(ALIAS)}"
    ).fetchall()]
    path = [f"memory.{schema}" for schema in mine] + [f"{ALIAS}.{schema}" for schema in lakes]
    con.execute(f"set search_path = {literal(','.join(path))}")


def _events(con: duckdb.DuckDBPyConnection) -> str:
    """The lake's events and PostgreSQL's tail beyond its horizon, read from PostgreSQL's index
    on the transaction id."""
    columns = ", ".join(COPIED["raw.events"])
    try:
        horizon = flushed_horizon(con)
    except duckdb.CatalogException:  # nothing copied into the lake yet
        return f"select {columns} from live.raw.events"
    return (f"select {columns} from {ALIAS}.raw.events union all "
            f"select {columns} from live.raw.events where ingested_xid >= {horizon}")
