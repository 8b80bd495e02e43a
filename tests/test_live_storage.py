"""Violations and dead letters in PostgreSQL: each stored once, whatever is delivered again."""

from __future__ import annotations

from datetime import datetime

import psycopg

from segops.events import Event
from segops.live_schema import ensure_live_schema
from streaming.live_storage import store_dead_letters, store_violations
from streaming.source import Incoming

NOW = datetime(2026, 6, 1, 12, 0)


def test_a_bad_message_delivered_twice_is_one_dead_letter(live_dsn):
    bad = (Incoming(b"{not json", message_id="m1", attributes={"origin": "web"}), "not JSON")
    nameless = (Incoming(b"", message_id=None), "empty")
    with psycopg.connect(live_dsn) as con:
        store_dead_letters(con, [bad, nameless])
        store_dead_letters(con, [bad, nameless])
        rows = con.execute("select message_id, reason, payload, attributes "
                           "from raw.dead_letters order by dead_letter_id").fetchall()
    assert rows[:2] == [("m1", "not JSON", b"{not json", {"origin": "web"}),
                        (None, "empty", b"", {})]
    assert len(rows) == 3, "a message without an id cannot be recognised again"


def test_violations_are_kept_per_event_and_kind(live_dsn):
    event = Event("e1", "ann", "purchase", NOW, "{}",
                  violations=(("missing", "order_id"), ("missing", "order_value")))
    with psycopg.connect(live_dsn) as con:
        store_violations(con, [event])
        store_violations(con, [event])
        rows = con.execute("select event_id, kind, detail from raw.event_violations "
                           "order by detail").fetchall()
    assert rows == [("e1", "missing", "order_id"), ("e1", "missing", "order_value")]


def test_a_process_starting_beside_an_open_batch_does_not_wait_for_it(live_dsn):
    """The schema is set up once: a consumer starting later runs no DDL, which would wait for
    every open batch (and hold up the next ones)."""
    with psycopg.connect(live_dsn) as open_batch:
        open_batch.execute("insert into raw.events (customer_id, event_id, event_type, "
                           "occurred_at) values ('c', 'e1', 'page_view', now())")
        with psycopg.connect(live_dsn, autocommit=True) as starting:
            starting.execute("set lock_timeout = '2s'")
            ensure_live_schema(starting)
