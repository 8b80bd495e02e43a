"""The outbox on PostgreSQL: one publisher holds the lease, and it passes on when the holder's
session ends; changes come out in the order they were recorded."""

from __future__ import annotations

from datetime import datetime

import psycopg

from demo.emulator import PubSubEmulator, free_port
from segops.live_leases import OUTBOX, take_lease
from segops.live_membership import apply_found
from segops.pubsub import ensure_pubsub
from segops.settings import load_settings
from streaming import live_consumer
from streaming.live_consumer import LiveConsumer
from streaming.live_outbox import mark_published, unpublished
from streaming.stream_loop import ConsumerConfig
from tests.stream_helpers import wait_for

NOW = datetime(2026, 6, 1, 12, 0)


def test_one_publisher_at_a_time_and_the_lease_passes_on(live_dsn):
    with psycopg.connect(live_dsn, autocommit=True) as second:
        with psycopg.connect(live_dsn, autocommit=True) as first:
            assert take_lease(first, OUTBOX)
            assert not take_lease(second, OUTBOX), "held by the first"
        # the first publisher's session ended (a crash would end it too); its backend exits
        # a moment after the client closes
        wait_for(lambda: take_lease(second, OUTBOX), timeout=10)


def test_unpublished_changes_in_order_until_marked(live_dsn):
    with psycopg.connect(live_dsn) as con:
        for customers in (["bob"], ["ann"]):
            apply_found(con, [("browsers", c, None) for c in customers], segments=["browsers"],
                        customers=customers, source="realtime", changed_at=NOW)
        rows = unpublished(con, in_flight=[], limit=10)
        assert [(r[2], r[3]) for r in rows] == [("bob", "enter"), ("ann", "enter")]
        mark_published(con, [rows[0][0]], NOW)
        assert [r[2] for r in unpublished(con, in_flight=[], limit=10)] == ["ann"]
        assert unpublished(con, in_flight=[rows[1][0]], limit=10) == [], (
            "what is in flight is not handed out twice")


def test_no_more_than_a_batch_of_changes_in_flight_while_pub_sub_takes_none(
        live_shop, monkeypatch):
    """Pub/Sub away (an emulator of the test's own, stopped): the changes wait in the outbox,
    not in the client, however many rounds the consumer makes."""
    emulator = PubSubEmulator(port=free_port())
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.start())
    monkeypatch.setenv("SEGOPS_PROJECT", "outbox-bound")
    monkeypatch.setattr(live_consumer, "BATCH", 5)
    settings = load_settings()
    ensure_pubsub(settings)
    with psycopg.connect(settings.postgres_dsn) as con:
        customers = [f"c{n:02d}" for n in range(12)]
        apply_found(con, [("browsers", c, None) for c in customers], segments=["browsers"],
                    customers=customers, source="realtime", changed_at=NOW)
    consumer = LiveConsumer(settings, ConsumerConfig(consumer_id="one"))
    with consumer.session():
        emulator.stop()
        try:
            for _ in range(3):
                consumer._publish_changes()
                assert len(consumer.feed.in_flight) == 5
        finally:  # Pub/Sub back, so the client's pending publishes end
            emulator.start()
            ensure_pubsub(settings)
            consumer.flush_changes()
            emulator.stop()
