"""The streaming consumer against the real Pub/Sub emulator and a real warehouse."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta

from demo.traffic import ShopTraffic, event
from segops.clock import utc_now
from segops.parity import measure_drift
from segops.warehouse import connect
from streaming.consumer import Consumer, ConsumerConfig
from tests.stream_helpers import (
    consume_until_idle,
    incoming,
    members,
    publish_all,
    realtime_segments,
    scalar,
)


def test_published_events_move_customers_into_the_right_segments(warehouse, pubsub):
    now = utc_now()
    publish_all(
        pubsub,
        [
            *(event("reader", "product_view", now, category="books", price=9.0)
              for _ in range(3)),
            event("buyer", "purchase", now, order_value=42.0, order_id="o1"),
            event("newbie", "signup", now),
            event("window", "product_view", now, category="toys", price=5.0),
        ],
    )
    consume_until_idle(pubsub)

    assert members(pubsub, "high_intent_browsers") == {"reader": "realtime"}
    assert members(pubsub, "recent_purchasers") == {"buyer": "realtime"}
    assert members(pubsub, "new_signups_no_purchase") == {"newbie": "realtime"}
    assert members(pubsub, "cart_abandoners") == {}
    assert scalar(pubsub, "select count(*) from raw.events") == 6
    beat = scalar(pubsub, "select events from segops.consumer_heartbeat")
    assert beat == 6


def test_the_same_event_twice_is_stored_once(warehouse, pubsub):
    purchase = event("buyer", "purchase", utc_now(), order_value=10.0, order_id="o1")
    publish_all(pubsub, [purchase, purchase])
    consume_until_idle(pubsub)
    assert scalar(pubsub, "select count(*) from raw.events") == 1

    # Redelivery after a crash between commit and ack: the same message processed again.
    consumer = Consumer(pubsub)
    consumer.start()
    outcome = consumer.process([incoming(purchase)])
    assert (outcome.stored, outcome.duplicates) == (0, 1)
    assert scalar(pubsub, "select count(*) from raw.events") == 1

    # A redelivery beside new events: the new ones are stored, the known one is not.
    view = event("buyer", "page_view", utc_now(), path="/")
    outcome = consumer.process([incoming(purchase), incoming(view)])
    assert (outcome.stored, outcome.duplicates) == (1, 1)
    assert scalar(pubsub, "select count(*) from raw.events") == 2
    assert scalar(
        pubsub, "select count(*) from segops.segment_membership_changes where change = 'enter' "
        "and segment = 'recent_purchasers'"
    ) == 1


MALFORMED = {
    b"not json at all": "not JSON",
    b'{"event_id": "x"}': "missing field(s)",
    b'{"event_id": 7, "customer_id": "c", "event_type": "page_view", '
    b'"occurred_at": "2026-01-01T00:00:00Z"}': "event_id must be a non-empty string",
    b'{"event_id": "u", "customer_id": "c", "event_type": "purchase", '
    b'"occurred_at": "2026-01-01T00:00:00Z"}': "purchase event needs properties.order_value",
    b'{"event_id": "t", "customer_id": "c", "event_type": "page_view", '
    b'"occurred_at": "last tuesday"}': "not RFC 3339",
    b"{" + b" " * 70_000 + b"}": "oversized",
}


def test_malformed_messages_are_dead_lettered_and_the_stream_goes_on(warehouse, pubsub):
    good = [event(f"c{i}", "page_view", utc_now(), path="/") for i in range(5)]
    publish_all(pubsub, [*MALFORMED, *good])
    consume_until_idle(pubsub)

    with connect(pubsub.warehouse) as con:
        letters = con.execute("select payload, reason from raw.dead_letters").fetchall()
    assert len(letters) == len(MALFORMED)
    for payload, reason in letters:
        assert MALFORMED[bytes(payload)] in reason
    assert scalar(pubsub, "select count(*) from raw.events") == len(good)


def test_time_alone_moves_customers_in_and_out(warehouse):
    clock = [utc_now().replace(microsecond=0)]
    start = clock[0]
    consumer = Consumer(warehouse, ConsumerConfig(publish_changes=False), clock=lambda: clock[0])
    consumer.start()
    consumer.process(
        [
            incoming(event("shopper", "add_to_cart", start, category="home", price=20.0)),
            *(incoming(event("browser", "product_view", start, category="toys", price=3.0))
              for _ in range(3)),
        ]
    )
    assert members(warehouse, "high_intent_browsers") == {"browser": "realtime"}

    def tick(offset: timedelta) -> None:
        clock[0] = start + offset
        consumer.process([])

    tick(timedelta(minutes=29))
    assert "shopper" not in members(warehouse, "cart_abandoners")
    tick(timedelta(minutes=31))
    assert members(warehouse, "cart_abandoners") == {"shopper": "realtime"}
    tick(timedelta(minutes=59, seconds=59))
    assert "browser" in members(warehouse, "high_intent_browsers")
    tick(timedelta(hours=1, seconds=1))
    assert members(warehouse, "high_intent_browsers") == {}
    tick(timedelta(hours=24, seconds=1))
    assert members(warehouse, "cart_abandoners") == {}, "the 24-hour window closed"


def test_stream_membership_equals_batch_at_the_same_now(warehouse, pubsub):
    rng = random.Random(3)
    now = utc_now()
    ids = itertools.cycle(range(40))
    traffic = ShopTraffic(lambda r: f"p{next(ids)}", seed=5, concurrency=20,
                          clock=lambda: now - timedelta(minutes=rng.randint(0, 90)))
    publish_all(pubsub, itertools.islice(traffic, 800))
    consumer = consume_until_idle(pubsub)

    with connect(pubsub.warehouse) as con:
        drifts = {
            segment.name: measure_drift(con, segment, consumer.watermark)
            for segment in realtime_segments(pubsub)
        }
        populated = con.execute(
            "select count(distinct segment) from segops.segment_membership"
        ).fetchone()[0]
    assert {name: d.total for name, d in drifts.items()} == dict.fromkeys(drifts, 0)
    assert populated >= 3, "the traffic put customers into several segments"


def test_micro_batches_use_one_duckdb_thread_and_little_memory_evaluating_everyone_all(
    warehouse,
):
    consumer = Consumer(warehouse, ConsumerConfig(publish_changes=False,
                                                  batch_memory_limit="64MB"))
    settings = []
    evaluate = consumer.segments.evaluator.evaluate

    def noting_settings(con, **scope):
        settings.append((scope.get("everyone", False), *con.execute(
            "select current_setting('threads'), current_setting('memory_limit')").fetchone()))
        return evaluate(con, **scope)

    consumer.segments.evaluator.evaluate = noting_settings
    with consumer.warehouse.held():
        consumer.start()
        consumer.process([incoming(event("shopper", "add_to_cart", utc_now(), price=20.0))])
    with connect(warehouse.warehouse, read_only=True) as con:
        defaults = con.execute(
            "select current_setting('threads'), current_setting('memory_limit')").fetchone()
    assert settings == [(True, *defaults), (False, 1, "61.0 MiB")]


def test_money_attributes_are_exact_decimals(warehouse):
    clock = [utc_now().replace(microsecond=0)]
    consumer = Consumer(warehouse, ConsumerConfig(publish_changes=False), clock=lambda: clock[0])
    consumer.start()
    consumer.process([incoming(event("buyer", "add_to_cart", clock[0], category="home",
                                     price=61.62, quantity=3))])
    clock[0] += timedelta(minutes=31)
    consumer.process([])
    with connect(warehouse.warehouse) as con:
        (attributes,) = con.execute(
            "select attributes::varchar from segops.segment_membership "
            "where segment = 'cart_abandoners' and customer_id = 'buyer'").fetchone()
    assert '"cart_value":184.86' in attributes, attributes
