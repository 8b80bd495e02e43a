"""A micro-batch on the live tables: redeliveries store nothing, two batches that share a
customer take turns (a stream batch leaves a customer another holds to the next batch), and
membership follows what a batch found, once."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import psycopg
import pytest

from demo.traffic import event as traffic_event
from segops.events import Event
from segops.live_membership import apply_found, lock_customers
from streaming.live_storage import store_events
from tests.live_helpers import started
from tests.stream_helpers import incoming, scalar, wait_for

NOW = datetime(2026, 6, 1, 12, 0)


def event(event_id: str, customer_id: str, minutes_ago: int) -> Event:
    return Event(event_id, customer_id, "product_view", NOW - timedelta(minutes=minutes_ago),
                 '{"category": "home"}')


def test_a_redelivered_event_is_stored_once(live_shop):
    """Also through a consumer: a redelivery (a crash between commit and ack) is counted as a
    duplicate, beside new events stored, and its customer's enter is not recorded again."""
    first = [event("e1", "ann", 5), event("e2", "bob", 5)]
    with psycopg.connect(live_shop.postgres_dsn) as con:
        assert store_events(con, first, NOW) == {"e1", "e2"}
        assert store_events(con, [*first, event("e3", "ann", 1)], NOW) == {"e3"}
        assert con.execute("select count(*) from raw.events").fetchone() == (3,)

    purchase = traffic_event("buyer", "purchase", NOW, order_value=10.0, order_id="o1")
    view = traffic_event("buyer", "page_view", NOW, path="/")
    with started(live_shop) as consumer:
        outcome = consumer.process([incoming(purchase)])
        assert (outcome.stored, outcome.duplicates) == (1, 0)
        outcome = consumer.process([incoming(purchase)])
        assert (outcome.stored, outcome.duplicates) == (0, 1)
        outcome = consumer.process([incoming(purchase), incoming(view)])
        assert (outcome.stored, outcome.duplicates) == (1, 1)
    assert scalar(live_shop, "select count(*) from raw.events where customer_id = 'buyer'") == 2
    assert scalar(live_shop, "select count(*) from segops.segment_membership_changes "
                             "where change = 'enter' and segment = 'recent_purchasers'") == 1


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


@pytest.mark.timeout(60)  # waiting for the holder would wait for ever
def test_a_stream_batch_leaves_a_customer_another_batch_holds_to_the_next(live_shop):
    """It does not wait for the holder: it stores the customer's events, decides the others,
    and queues the held one, whom the first batch after the holder's commit decides."""
    purchases = [traffic_event(customer, "purchase", NOW, order_value=10.0,
                               order_id=f"o-{customer}") for customer in ("held", "free")]
    with started(live_shop) as consumer, psycopg.connect(live_shop.postgres_dsn) as holder:
        lock_customers(holder, ["held"])  # psycopg opened a transaction: held until commit
        consumer.process([incoming(e) for e in purchases])
        assert scalar(live_shop, "select count(*) from raw.events where customer_id = 'held'") \
            == 1, "the held customer's event is stored"
        assert recent_purchasers(live_shop) == {"free"}
        assert scalar(live_shop, "select reason from segops.reevaluate_queue "
                                 "where customer_id = 'held'") == "busy"
        consumer.process([])  # the holder still holds it: queued again
        assert recent_purchasers(live_shop) == {"free"}
        holder.commit()
        consumer.process([])
        assert recent_purchasers(live_shop) == {"held", "free"}
        assert scalar(live_shop, "select count(*) from segops.reevaluate_queue") == 0


def recent_purchasers(settings) -> set[str]:
    with psycopg.connect(settings.postgres_dsn) as con:
        return {row[0] for row in con.execute(
            "select customer_id from segops.segment_membership "
            "where segment = 'recent_purchasers'")}


def test_membership_follows_what_was_found_and_a_repeat_changes_nothing(live_dsn):
    def apply(found, customers=("ann", "bob", "cy"), at=NOW):
        return apply_found(con, found, segments=["browsers"], customers=customers,
                           source="realtime", changed_at=at)

    with psycopg.connect(live_dsn) as con:
        assert apply([("browsers", "ann", '{"views": 3}'), ("browsers", "bob", None)]) == {
            ("browsers", "enter"): 2}
        assert apply([("browsers", "ann", '{"views": 3}'), ("browsers", "bob", None)]) == {}, (
            "a redelivered batch records nothing twice")
        later = NOW + timedelta(hours=1)
        assert apply([("browsers", "ann", '{"views": 4}')], at=later) == {
            ("browsers", "exit"): 1}
        assert apply([], customers=["cy"]) == {}, "customers out of scope keep their membership"
        members = con.execute("select customer_id, attributes, entered_at "
                              "from segops.segment_membership").fetchall()
        changes = con.execute("select customer_id, change, changed_at, source from "
                              "segops.segment_membership_changes order by change_id").fetchall()
    assert members == [("ann", {"views": 4}, NOW)], (
        "attributes stay current; a member who stays keeps the time it entered")
    assert changes == [("ann", "enter", NOW, "realtime"), ("bob", "enter", NOW, "realtime"),
                       ("bob", "exit", later, "realtime")]


def test_concurrent_batches_for_one_customer_record_one_enter(live_dsn):
    errors = []

    def consumer() -> None:
        with psycopg.connect(live_dsn) as con:
            for _ in range(30):
                try:
                    with con.transaction():
                        lock_customers(con, ["ann"])
                        apply_found(con, [("browsers", "ann", None)], segments=["browsers"],
                                    customers=["ann"], source="realtime", changed_at=NOW)
                except psycopg.Error as error:
                    errors.append(error)

    workers = [threading.Thread(target=consumer) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    with psycopg.connect(live_dsn) as con:
        changes = con.execute("select change from segops.segment_membership_changes").fetchall()
    assert errors == [] and changes == [("enter",)]
