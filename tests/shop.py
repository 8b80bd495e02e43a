"""Hand-built shop data for tests: a few customers and events at exact times, in the live
tables in PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from itertools import count

import psycopg

_event_ids = count(1)


def add_customer(con: psycopg.Connection, customer_id: str, *, country: str = "US",
                 signed_up_at: datetime) -> None:
    con.execute(
        "insert into raw.customers (customer_id, email, country, city, acquisition_channel, "
        "signed_up_at) values (%s, %s, %s, %s, %s, %s)",
        [customer_id, f"{customer_id}@example.com", country, "Somewhere", "organic", signed_up_at],
    )


def add_event(con: psycopg.Connection, customer_id: str, event_type: str,
              occurred_at: datetime, **properties: object) -> str:
    event_id = f"t{next(_event_ids):08d}"
    con.execute(
        "insert into raw.events (event_id, customer_id, event_type, occurred_at, properties) "
        "values (%s, %s, %s, %s, %s)",
        [event_id, customer_id, event_type, occurred_at, json.dumps(properties)],
    )
    return event_id


def ago(now: datetime, **delta: float) -> datetime:
    return now - timedelta(**delta)
