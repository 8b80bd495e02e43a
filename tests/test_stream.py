"""The streaming consumer on PostgreSQL, against the real Pub/Sub emulator: events move customers
into the right segments, time alone moves them in and out, and money stays exact."""

from __future__ import annotations

from datetime import timedelta

from demo.traffic import event
from segops.clock import utc_now
from tests.live_helpers import started
from tests.stream_helpers import (
    consume_until_idle,
    incoming,
    members,
    publish_all,
    scalar,
)


def test_published_events_move_customers_into_the_right_segments(live):
    now = utc_now()
    publish_all(
        live,
        [
            *(event("reader", "product_view", now, category="books", price=9.0)
              for _ in range(3)),
            event("buyer", "purchase", now, order_value=42.0, order_id="o1"),
            event("newbie", "signup", now),
            event("window", "product_view", now, category="toys", price=5.0),
        ],
    )
    consume_until_idle(live)

    assert members(live, "high_intent_browsers") == {"reader": "realtime"}
    assert members(live, "recent_purchasers") == {"buyer": "realtime"}
    assert members(live, "new_signups_no_purchase") == {"newbie": "realtime"}
    assert members(live, "cart_abandoners") == {}
    assert scalar(live, "select count(*) from raw.events") == 6
    beat = scalar(live, "select events from segops.consumer_heartbeat")
    assert beat == 6


def test_time_alone_moves_customers_in_and_out(live_shop):
    """Exits too: a window closing moves a customer out with no event, as an enter does."""
    clock = [utc_now().replace(microsecond=0)]
    start = clock[0]
    with started(live_shop, clock=lambda: clock[0]) as consumer:
        consumer.process(
            [
                incoming(event("shopper", "add_to_cart", start, category="home", price=20.0)),
                *(incoming(event("browser", "product_view", start, category="toys", price=3.0))
                  for _ in range(3)),
            ]
        )
        assert members(live_shop, "high_intent_browsers") == {"browser": "realtime"}

        def tick(offset: timedelta) -> None:
            clock[0] = start + offset
            consumer.process([])

        tick(timedelta(minutes=29))
        assert "shopper" not in members(live_shop, "cart_abandoners")
        tick(timedelta(minutes=31))
        assert members(live_shop, "cart_abandoners") == {"shopper": "realtime"}
        tick(timedelta(minutes=59, seconds=59))
        assert "browser" in members(live_shop, "high_intent_browsers")
        tick(timedelta(hours=1, seconds=1))
        assert members(live_shop, "high_intent_browsers") == {}
        tick(timedelta(hours=24, seconds=1))
        assert members(live_shop, "cart_abandoners") == {}, "the 24-hour window closed"


def test_money_attributes_are_exact_decimals(live_shop):
    """Attributes travel through jsonb: a sum of prices must stay the decimal it is."""
    clock = [utc_now().replace(microsecond=0)]
    with started(live_shop, clock=lambda: clock[0]) as consumer:
        consumer.process([incoming(event("buyer", "add_to_cart", clock[0], category="home",
                                         price=61.62, quantity=3))])
        clock[0] += timedelta(minutes=31)
        consumer.process([])
    value = scalar(live_shop, "select attributes ->> 'cart_value' from segops.segment_membership "
                              "where segment = 'cart_abandoners' and customer_id = 'buyer'")
    assert value == "184.86", value
