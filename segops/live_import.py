"""The live tables' raw rows copied from PostgreSQL into the warehouse file, where the nightly
dbt build reads them: the stream stores events in PostgreSQL, the models are built in DuckDB.

Events are only ever added, so each copy takes those ingested since shortly before the newest
the warehouse holds (consumers commit out of order by a batch or so; the margin covers that,
the key comparison keeps anything from arriving twice). Profiles and their history change in
place and are small beside the events: they are copied whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from segops.extensions import attach_postgres
from segops.live_copy import COPIED

# How far back of the newest copied ingestion each copy looks again: far longer than a batch.
OVERLAP = "interval 10 minute"


@dataclass(frozen=True)
class Imported:
    events: int
    customers: int
    traits: int


def import_live_raw(con: duckdb.DuckDBPyConnection, dsn: str) -> Imported:
    """Bring the warehouse's raw tables level with PostgreSQL's, in one transaction of `con`
    (a connection to the warehouse file)."""
    attach_postgres(con, dsn, read_only=True)
    try:
        con.execute("begin")
        events = ", ".join(COPIED["raw.events"])
        (added,) = con.execute(
            f"""
            insert into raw.events ({events})
            select {events} from live.raw.events as e
            where e.ingested_at >= (select coalesce(max(ingested_at), timestamp '-infinity')
                                    from raw.events) - {OVERLAP}
              and not exists (select 1 from raw.events as w
                              where w.customer_id = e.customer_id and w.event_id = e.event_id)
            """).fetchone()
        copied = {}
        for table in ("raw.customers", "raw.customer_traits"):
            columns = ", ".join(COPIED[table])
            con.execute(f"delete from {table}")
            (copied[table],) = con.execute(f"insert into {table} ({columns}) "
                                           f"select {columns} from live.{table}").fetchone()
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.execute("detach live")
    return Imported(events=added, customers=copied["raw.customers"],
                    traits=copied["raw.customer_traits"])
