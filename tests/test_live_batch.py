"""A micro-batch on the live tables: redeliveries store nothing, two batches that share a
customer take turns, and a customer's history comes back as Arrow from a time bound on."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import psycopg

from segops.events import Event
from streaming.live_batch import histories, lock_customers, store_events
from tests.stream_helpers import wait_for

NOW = datetime(2026, 6, 1, 12, 0)


def event(event_id: str, customer_id: str, minutes_ago: int) -> Event:
    return Event(event_id, customer_id, "product_view", NOW - timedelta(minutes=minutes_ago),
                 '{"category": "home"}')


def test_a_redelivered_event_is_stored_once(live_dsn):
    first = [event("e1", "ann", 5), event("e2", "bob", 5)]
    with psycopg.connect(live_dsn) as con:
        assert store_events(con, first, NOW) == {"e1", "e2"}
        assert store_events(con, [*first, event("e3", "ann", 1)], NOW) == {"e3"}
        assert con.execute("select count(*) from raw.events").fetchone() == (3,)


def test_two_batches_that_share_a_customer_take_turns(live_dsn):
    with psycopg.connect(live_dsn) as first, psycopg.connect(live_dsn) as second:
        lock_customers(first, ["bob", "ann"])  # psycopg opened a transaction: held until commit
        done = threading.Event()

        def other_batch() -> None:
            with second.transaction():
                lock_customers(second, ["ann", "cy"])
                done.set()

        worker = threading.Thread(target=other_batch)
        worker.start()
        try:
            with psycopg.connect(live_dsn, autocommit=True) as watcher:
                wait_for(lambda: watcher.execute(
                    "select count(*) from pg_locks where locktype = 'advisory' and not granted"
                ).fetchone()[0] == 1, timeout=10)  # the second batch waits for ann's lock
            assert not done.is_set()
        finally:
            first.commit()
            worker.join(timeout=10)
        assert done.is_set(), "and goes on once the first batch commits"


def test_histories_come_back_from_the_bound_on(live_dsn):
    with psycopg.connect(live_dsn) as con:
        store_events(con, [event("old", "ann", 120), event("new", "ann", 10),
                           event("other", "bob", 10)], NOW)
        everything = histories(con, ["ann"])
        recent = histories(con, ["ann"], since=NOW - timedelta(hours=1))
    assert sorted(everything.column("event_id").to_pylist()) == ["new", "old"]
    assert recent.column("event_id").to_pylist() == ["new"]
    assert recent.column("properties").to_pylist() == ['{"category": "home"}']
    assert str(recent.schema.field("occurred_at").type) == "timestamp[us]"
