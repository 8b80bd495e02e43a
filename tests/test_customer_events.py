"""The events keyed by customer that the real-time path reads hold exactly what raw.events holds,
whoever wrote raw.events and whatever happened between the consumer's two commits."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import timedelta

from demo.synthetic import generate
from demo.traffic import ShopTraffic, event
from segops.clock import utc_now
from segops.warehouse import connect
from streaming import customer_events
from streaming.consumer import Consumer, ConsumerConfig
from tests.shop import add_event
from tests.stream_helpers import incoming, members


def copies(consumer: Consumer) -> tuple[list[tuple], list[tuple]]:
    """Every customer's events as the index copies them, and as raw.events holds them."""
    with consumer.warehouse.use() as con:  # opening the warehouse brings the index up to date
        con.execute("create or replace temp table _scope as "
                    "select distinct customer_id from raw.events")
        consumer.by_customer.copy_into(con, "_from_index", "_scope")
        return (con.execute("select * from _from_index order by event_id").fetchall(),
                con.execute("select * from raw.events order by event_id").fetchall())


def started(warehouse) -> Consumer:
    """A consumer past `start()`: the warehouse opened once, so the index is in sync."""
    consumer = Consumer(warehouse, ConsumerConfig(publish_changes=False))
    consumer.start()
    return consumer


def traffic_batches(count: int, size: int):
    now = utc_now()
    ids = itertools.cycle(range(25))
    traffic = ShopTraffic(lambda r: f"p{next(ids)}", seed=11, concurrency=10,
                          clock=lambda: now - timedelta(minutes=5))
    return [[incoming(e) for e in itertools.islice(traffic, size)] for _ in range(count)]


def test_the_index_holds_every_stored_event_once(warehouse):
    consumer = Consumer(warehouse, ConsumerConfig(publish_changes=False))
    batches = traffic_batches(4, 150)
    with consumer.warehouse.held():  # open throughout, as when running: no sync in between
        consumer.start()
        for batch in batches:
            consumer.process(batch)
        from_index, stored = copies(consumer)
        assert len(stored) == 600
        assert from_index == stored
        assert consumer.process(batches[1]).stored == 0, "a redelivery stores nothing twice"
        assert copies(consumer)[0] == stored


def test_a_copy_in_many_parts_holds_the_same_rows(warehouse, monkeypatch):
    consumer = Consumer(warehouse, ConsumerConfig(publish_changes=False))
    monkeypatch.setattr(customer_events, "COPY_PART_ROWS", 7)
    with consumer.warehouse.held():
        consumer.start()
        for batch in traffic_batches(2, 150):
            consumer.process(batch)
        with consumer.warehouse.use() as con:
            held = dict(con.execute(
                "select customer_id, count(*) from raw.events group by all").fetchall())
        parts = consumer.by_customer.parts([*held, "never-seen"])

        assert sorted(c for part in parts for c in part) == sorted([*held, "never-seen"])
        assert len(parts) > 10
        assert all(len(part) == 1 or sum(held.get(c, 0) for c in part) <= 7 for part in parts)
        from_index, stored = copies(consumer)
        assert from_index == stored, "the parts together are the whole copy"
    assert consumer.by_customer.parts([]) == [[]], "an empty scope still creates the copy"


def test_each_batch_carries_the_last_copy_over_and_reads_only_new_customers(warehouse,
                                                                           monkeypatch):
    consumer = Consumer(warehouse, ConsumerConfig(publish_changes=False))
    from_index: list[set[str]] = []
    parts = consumer.by_customer.parts
    monkeypatch.setattr(consumer.by_customer, "parts",
                        lambda customers: from_index.append(set(customers)) or parts(customers))
    first, second, third, fourth = traffic_batches(4, 150)
    beat = consumer._beat
    # (batch, fails after its copy, carries the previous copy over); a failure reopens the
    # warehouse, so the batch after it starts afresh; the last two are redeliveries
    steps = [(first, False, False), (second, False, True), (third, True, True),
             (fourth, False, False), (third, False, True), (second, False, True)]
    with consumer.warehouse.held():
        consumer.start()
        for batch, fails, carries in steps:
            from_index.clear()
            monkeypatch.setattr(consumer, "_beat", _raise if fails else beat)
            try:
                consumer.process(batch)
            except RuntimeError:
                assert fails
                continue
            with consumer.warehouse.use() as con:
                scope = {row[0] for row in con.execute("select customer_id from _scope").fetchall()}
                copied = con.execute("select * from _scoped_raw_events order by all").fetchall()
                held = con.execute("select * from raw.events where customer_id in "
                                   "(select customer_id from _scope) order by all").fetchall()
            assert copied == held
            assert (from_index[0] < scope) == carries, "only new customers are read again"
    assert len(held) > 150


def _raise(*args, **kwargs):
    raise RuntimeError("the batch fails after its copy was made")


def test_events_another_process_appended_are_caught_up(warehouse):
    consumer = started(warehouse)
    now = utc_now()
    consumer.process([incoming(event("reader", "page_view", now))])
    with connect(warehouse.warehouse) as con:  # another writer, while the consumer is closed
        for _ in range(3):
            add_event(con, "reader", "product_view", now, category="books", price=9.0)

    consumer.process([incoming(event("reader", "page_view", now))])

    assert "reader" in members(warehouse, "high_intent_browsers"), \
        "the three views written elsewhere were read from the index"
    from_index, stored = copies(consumer)
    assert from_index == stored


def test_a_commit_the_index_missed_is_put_back(warehouse):
    consumer = started(warehouse)
    first, second = traffic_batches(2, 100)
    consumer.process(first)
    before = sqlite3.connect(consumer.by_customer.path).execute(
        "select * from summary").fetchone()
    consumer.process(second)
    consumer.by_customer.close()
    # As if the consumer died after the warehouse committed the second batch, before the index
    lost = [(m.message_id,) for m in second]
    with sqlite3.connect(consumer.by_customer.path) as index:
        index.executemany("delete from events where event_id = ?", lost)
        index.execute("update summary set row_count = ?, newest_ingested_at = ?, "
                      "newest_occurred_at = ?", before[1:])

    from_index, stored = copies(consumer)
    assert len(stored) == 200
    assert from_index == stored


def test_a_regenerated_history_is_indexed_again(warehouse):
    consumer = started(warehouse)
    consumer.process(traffic_batches(1, 100)[0])
    with connect(warehouse.warehouse) as con:
        generate(con, customers=200, now=utc_now() - timedelta(days=1))

    from_index, stored = copies(consumer)
    assert len(stored) > 1000
    assert from_index == stored


def test_a_redelivery_is_caught_after_the_index_was_lost(warehouse):
    batch = traffic_batches(1, 100)[0]
    consumer = started(warehouse)
    consumer.process(batch)
    consumer.by_customer.close()
    consumer.by_customer.path.unlink()

    again = started(warehouse)  # opening the warehouse rebuilds the index from raw.events
    outcome = again.process(batch)

    assert (outcome.stored, outcome.duplicates) == (0, 100)
    from_index, stored = copies(again)
    assert len(stored) == 100
    assert from_index == stored


def test_an_event_id_is_stored_once_whatever_customer_it_names(warehouse):
    consumer = started(warehouse)
    first = event("first", "page_view", utc_now())
    consumer.process([incoming(first)])

    outcome = consumer.process([incoming({**first, "customer_id": "second"})])

    assert (outcome.stored, outcome.duplicates) == (0, 1)
    from_index, stored = copies(consumer)
    assert [(row[0], row[1]) for row in stored] == [(first["event_id"], "first")]
    assert from_index == stored


def test_the_warehouse_holds_no_index_on_event_ids(warehouse):
    with connect(warehouse.warehouse) as con:  # a warehouse given such an index
        con.execute("create unique index events_event_id on raw.events (event_id)")
    started(warehouse)
    with connect(warehouse.warehouse) as con:
        indexes = con.execute(
            "select index_name from duckdb_indexes() where table_name = 'events'").fetchall()
    assert indexes == [], "DuckDB holds an index whole in memory; it grows with every event"
