"""The shipped real-time segments evaluated against PostgreSQL: a batch's events move its
customers in and out, with the segment SQL as dbt compiled it."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from demo.traffic import event
from segops.catalog import Catalog
from segops.events import Event
from segops.live_membership import lock_customers
from segops.live_scope import ScopeEngine
from streaming.evaluator import RealtimeEvaluator
from streaming.live_evaluation import crossed_customers, evaluate_batch, sweep_query
from streaming.live_storage import store_events
from tests.live_helpers import started, stream, views
from tests.projects import project_with_segments, realtime_yml
from tests.stream_helpers import incoming, rows
from tests.stream_helpers import members as segment_members

NOW = datetime(2026, 6, 1, 12, 0)


def shop_event(event_id: str, customer_id: str, event_type: str, minutes_ago: int,
               properties: str) -> Event:
    return Event(event_id, customer_id, event_type, NOW - timedelta(minutes=minutes_ago),
                 properties)


def batch(con: psycopg.Connection, evaluator: RealtimeEvaluator, events: list[Event],
          now: datetime) -> dict:
    with con.transaction():
        customers = [e.customer_id for e in events]
        lock_customers(con, customers)
        store_events(con, events, now)
        return evaluate(con, evaluator, customers, now)


def evaluate(con: psycopg.Connection, evaluator: RealtimeEvaluator, customers: list[str],
             now: datetime) -> dict:
    engine = ScopeEngine()
    engine.load(con, customers)
    return dict(evaluate_batch(con, evaluator, engine, list(evaluator.queries), customers,
                               now))


def members(con: psycopg.Connection) -> set[tuple[str, str]]:
    return set(con.execute("select segment, customer_id from segops.segment_membership"
                           ).fetchall())


def test_a_batch_moves_its_customers_through_the_shipped_segments(manifest, live_dsn):
    evaluator = RealtimeEvaluator.from_catalog(Catalog.load(manifest.manifest_path))
    cart = '{"product_id": "hom-0001", "category": "home", "price": 10.0, "quantity": 1}'
    with psycopg.connect(live_dsn) as con:
        changes = batch(con, evaluator, [
            shop_event("a1", "ann", "add_to_cart", 40, cart),
            *(shop_event(f"b{i}", "bob", "product_view", 10 + i, cart) for i in range(3)),
        ], NOW)
        assert changes == {("cart_abandoners", "enter"): 1,
                           ("high_intent_browsers", "enter"): 1}
        assert members(con) == {("cart_abandoners", "ann"), ("high_intent_browsers", "bob")}

        later = NOW + timedelta(minutes=1)
        changes = batch(con, evaluator, [
            shop_event("a2", "ann", "purchase", -1, '{"order_id": "o1", "order_value": 10.0}'),
        ], later)
        assert changes == {("cart_abandoners", "exit"): 1, ("recent_purchasers", "enter"): 1}
        assert members(con) == {("recent_purchasers", "ann"), ("high_intent_browsers", "bob")}


def test_time_alone_moves_a_customer_once_postgres_finds_the_boundary_passed(manifest,
                                                                            live_dsn):
    evaluator = RealtimeEvaluator.from_catalog(Catalog.load(manifest.manifest_path))
    cart = '{"product_id": "hom-0001", "category": "home", "price": 10.0, "quantity": 1}'
    with psycopg.connect(live_dsn) as con:
        batch(con, evaluator, [shop_event("a1", "ann", "add_to_cart", 29, cart),
                               shop_event("b1", "bob", "product_view", 10, cart)], NOW)
        assert members(con) == set(), "ann's cart is 29 minutes old"
        later = NOW + timedelta(minutes=2)
        crossed = crossed_customers(con, sweep_query(con, evaluator), NOW, later)
        assert crossed == {"ann"}, "the cart passed 30 minutes; bob's views pass no boundary yet"
        with con.transaction():
            lock_customers(con, crossed)
            assert evaluate(con, evaluator, sorted(crossed), later) == {
                ("cart_abandoners", "enter"): 1}


def test_a_sweep_finding_more_than_a_batch_takes_queues_the_rest_for_the_next(live_shop):
    """After an outage the sweep can find most of a large shop: a batch takes
    `swept_per_batch` of them (a lock each in PostgreSQL's shared lock table) and the batches
    after take the rest from the queue."""
    cart = {"product_id": "hom-0001", "category": "home", "price": 10.0, "quantity": 1}
    shoppers = ["ann", "bob", "cy", "dee", "eve"]
    clock = [NOW]
    with started(live_shop, clock=lambda: clock[0], swept_per_batch=2) as consumer:
        consumer.process([incoming(event(name, "add_to_cart", NOW - timedelta(minutes=29),
                                         **cart)) for name in shoppers])
        assert segment_members(live_shop, "cart_abandoners") == {}, "29 minutes old"

        clock[0] = NOW + timedelta(minutes=2)  # only time passes
        consumer.process([])
        assert len(segment_members(live_shop, "cart_abandoners")) == 2
        assert rows(live_shop, "select count(*) from segops.reevaluate_queue "
                               "where reason = 'time'") == [(3,)]

        consumer.process([])
    assert set(segment_members(live_shop, "cart_abandoners")) == set(shoppers)


def test_segments_breaking_the_contract_fail_alone_and_the_stream_goes_on(
        live_shop, tmp_path, monkeypatch):
    settings = project_with_segments(tmp_path, monkeypatch, {
        "doubled": ("select customer_id from {{ ref('stg_events') }}", realtime_yml("doubled")),
        "nameless": ("select customer_id as who from {{ ref('stg_events') }}",
                     realtime_yml("nameless")),
        "outsider": ("select customer_id from {{ ref('stg_events') }} "
                     "union select 'zed'", realtime_yml("outsider")),
    })
    stream(settings, *views("paris", 30))
    stream(settings, *views("rome", 20))
    with psycopg.connect(settings.postgres_dsn) as con:
        (failed,) = con.execute("select failed_segments from segops.consumer_heartbeat"
                                ).fetchone()
        assert "duplicate customer_id" in failed["doubled"]
        assert "no customer_id column" in failed["nameless"]
        assert members(con) >= {("high_intent_browsers", "paris"),
                                ("high_intent_browsers", "rome"), ("outsider", "paris"),
                                ("outsider", "rome")}, "the other segments kept evaluating"
        assert ("doubled", "paris") not in members(con)


# Fails for a customer whose city is no number: until that customer's city changes, the segment
# cannot be evaluated for any batch that holds them.
NUMBERED = ("select customer_id, cast(city as integer) as city_code "
            "from {{ ref('stg_customers') }} where city is not null")


def test_a_segment_that_failed_for_a_while_catches_up_the_customers_it_skipped(
        live_shop, tmp_path, monkeypatch):
    settings = project_with_segments(tmp_path, monkeypatch, {
        "numbered": (NUMBERED, realtime_yml("numbered"))})
    with started(settings, clock=lambda: NOW, retry_failed_seconds=0) as consumer:
        earlier = NOW - timedelta(minutes=1)
        consumer.process([incoming(event("odd", "identify", earlier, city="Springfield")),
                          incoming(event("ann", "identify", earlier, city="5"))])
        assert "numbered" in consumer.segments.failed, "no integer is Springfield"
        consumer.process([incoming(event("odd", "identify", NOW, city="7"))])
        assert set(segment_members(settings, "numbered")) == set(), "skipped while failed"
        consumer.maintain()  # between batches: the failed segment is tried again
        assert "numbered" not in consumer.segments.failed
        assert set(segment_members(settings, "numbered")) == {"ann", "odd"}, \
            "ann's batch skipped the segment, so its retry evaluates everyone"
