"""Hand-built shop data for tests: a few customers and events at exact times."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from itertools import count

import duckdb
import psycopg

_event_ids = count(1)

Connection = duckdb.DuckDBPyConnection | psycopg.Connection


def _values(con: Connection, count: int) -> str:
    mark = "%s" if isinstance(con, psycopg.Connection) else "?"
    return f"values ({', '.join([mark] * count)})"


def add_customer(con: Connection, customer_id: str, *, country: str = "US",
                 signed_up_at: datetime) -> None:
    """A customer in the raw tables of a DuckDB warehouse or the live PostgreSQL."""
    con.execute(
        "insert into raw.customers (customer_id, email, country, city, acquisition_channel, "
        f"signed_up_at) {_values(con, 6)}",
        [customer_id, f"{customer_id}@example.com", country, "Somewhere", "organic", signed_up_at],
    )


def add_event(con: Connection, customer_id: str, event_type: str,
              occurred_at: datetime, **properties: object) -> str:
    event_id = f"t{next(_event_ids):08d}"
    con.execute(
        "insert into raw.events (event_id, customer_id, event_type, occurred_at, properties) "
        f"{_values(con, 5)}",
        [event_id, customer_id, event_type, occurred_at, json.dumps(properties)],
    )
    return event_id


def ago(now: datetime, **delta: float) -> datetime:
    return now - timedelta(**delta)
