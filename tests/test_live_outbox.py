"""The outbox on PostgreSQL: one publisher holds the lease, and it passes on when the holder's
session ends; changes come out in the order they were recorded."""

from __future__ import annotations

from datetime import datetime

import psycopg

from segops.live_leases import OUTBOX, take_lease
from segops.live_membership import apply_found
from streaming.live_outbox import mark_published, unpublished
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
