"""A segment no consumer evaluated yet is evaluated for every customer a chunk at a time between
batches: the stream goes on meanwhile, on the consumer running the pass and on the others, and a
pass whose holder goes away is taken over."""

from __future__ import annotations

import threading
from datetime import timedelta

import psycopg

from segops.events import Event
from streaming.live_consumer import LiveConsumer
from streaming.live_storage import store_events
from streaming.stream_loop import ConsumerConfig
from tests.live_helpers import NOW, views
from tests.stream_helpers import incoming, members

BOOK = '{"product_id": "boo-0001", "category": "books", "price": 9.0}'
CART = '{"product_id": "hom-0001", "category": "home", "price": 10.0, "quantity": 1}'
BROWSERS = [f"browser-{n}" for n in range(6)]


def history(dsn: str, events: list[Event]) -> None:
    """Events stored before any consumer ran: no segment is evaluated for anyone yet."""
    with psycopg.connect(dsn) as con:
        store_events(con, events, NOW)


def browsing(customer: str) -> list[Event]:
    return [Event(f"{customer}-{n}", customer, "product_view",
                  NOW - timedelta(minutes=30 - n), BOOK) for n in range(3)]


def consumer(settings, name: str, clock=lambda: NOW) -> LiveConsumer:
    return LiveConsumer(settings, ConsumerConfig(consumer_id=name, publish_changes=False,
                                                 backfill_chunk=2), clock=clock)


def recorded(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as con:
        return {row[0] for row in con.execute("select segment from segops.realtime_segments")}


def test_a_pass_for_everyone_goes_a_chunk_at_a_time_and_the_stream_goes_on(live_shop):
    settings = live_shop
    history(settings.postgres_dsn, [e for c in BROWSERS for e in browsing(c)])
    first, second = consumer(settings, "first"), consumer(settings, "second")
    with first.session(), second.session():
        first.start()
        assert first.backfilling(), "six customers, two a chunk: the pass is under way"
        assert set(members(settings, "high_intent_browsers")) == set(BROWSERS[:2])

        starting = threading.Thread(target=second.start)
        starting.start()
        starting.join(timeout=60)
        assert not starting.is_alive(), "the second consumer started without waiting"
        second.process([incoming(e) for e in views("late", 20)])
        assert "late" in members(settings, "high_intent_browsers"), \
            "batches evaluate the new segments while the pass runs"

        while first.backfilling():
            first.maintain()  # what the loop does between batches
        assert set(members(settings, "high_intent_browsers")) == {*BROWSERS, "late"}
        assert recorded(settings.postgres_dsn) == set(first.segments.evaluator.queries)
        second.maintain()
        assert not second.backfilling() and not second.wanted, "it finds the pass done"


def test_a_pass_whose_consumer_went_away_is_taken_over(live_shop):
    settings = live_shop
    history(settings.postgres_dsn, [e for c in BROWSERS for e in browsing(c)])
    second = consumer(settings, "second")
    with second.session():
        first = consumer(settings, "first")
        with first.session():
            first.start()
            second.start()
            assert first.backfilling() and not second.backfilling()
        assert recorded(settings.postgres_dsn) == set(), "the pass did not finish"

        second.maintain()
        assert second.backfilling(), "the lease went with the first consumer's session"
        second.catch_up()
        assert set(members(settings, "high_intent_browsers")) == set(BROWSERS)
        assert recorded(settings.postgres_dsn) == set(second.segments.evaluator.queries)


def test_each_chunk_is_evaluated_at_its_own_time(live_shop):
    """A cart that turns 30 minutes old while the pass runs, before its customer's chunk:
    the time sweep enters them, and their chunk, later, must find them in still."""
    settings = live_shop
    now = [NOW]
    carts = [Event(f"{c}-cart", c, "add_to_cart", NOW - timedelta(minutes=29), CART)
             for c in ("cart-1", "cart-2", "cart-3")]
    history(settings.postgres_dsn, [*browsing("browser-0"), *browsing("browser-1"), *carts])
    evaluating = consumer(settings, "one", clock=lambda: now[0])
    with evaluating.session():
        evaluating.start()  # the browsers' chunk, at NOW: no cart is 30 minutes old yet
        assert set(members(settings, "cart_abandoners")) == set()
        now[0] = NOW + timedelta(minutes=2)
        evaluating.process([])  # the loop's tick: the time sweep finds the carts
        assert set(members(settings, "cart_abandoners")) == {"cart-1", "cart-2", "cart-3"}
        evaluating.catch_up()
        assert set(members(settings, "cart_abandoners")) == {"cart-1", "cart-2", "cart-3"}
