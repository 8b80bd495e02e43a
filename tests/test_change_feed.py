"""The change feed: every membership change reaches `segment-changes`, at least once, in order,
from PostgreSQL's outbox, whichever consumer holds it."""

from __future__ import annotations

from collections import defaultdict
from concurrent import futures
from datetime import timedelta

from demo.traffic import event
from segops.clock import utc_now
from tests.live_helpers import started
from tests.stream_helpers import downstream_subscription, incoming, receive, rows


def changes(settings) -> list[tuple]:
    return rows(settings, "select change_id, customer_id, published_at "
                          "from segops.segment_membership_changes order by change_id")


def test_a_crash_before_marking_republishes_and_downstream_sees_every_change_in_order(live):
    """A consumer dies after Pub/Sub took its last changes but before marking them: its outbox
    lease goes with its session, and the next holder publishes them again."""
    path = downstream_subscription(live)
    now = utc_now()
    with started(live, publish_changes=True) as first:
        for minute, customer in enumerate(["ann", "bob", "ann", "cy", "bob"]):
            first.process([incoming(event(customer, "purchase", now + timedelta(seconds=minute),
                                          order_value=10.0, order_id=f"o{minute}")),
                           incoming(event(customer, "signup", now))])
        futures.wait(set(first.feed.in_flight.values()))
        first.process([])  # Pub/Sub accepted the first batches' changes; this marks them
        published_before_crash = {cid for cid, _, at in changes(live) if at is not None}
        first.process([incoming(event("dee", "signup", now))])
        futures.wait(set(first.feed.in_flight.values()))
    # kill -9 here: dee's changes were handed to Pub/Sub but never marked published.

    unmarked = {cid for cid, _, at in changes(live) if at is None}
    assert unmarked, "the crash must leave changes Pub/Sub accepted but not marked"
    assert published_before_crash

    with started(live, consumer_id="two", publish_changes=True) as second:
        second.process([])
        second.flush_changes()
    stored = changes(live)
    assert all(at is not None for _, _, at in stored), "every change ends marked published"

    received = receive(path, {cid for cid, _, _ in stored})
    by_id = defaultdict(int)
    for body, _ in received:
        by_id[body["change_id"]] += 1
    assert set(by_id) == {cid for cid, _, _ in stored}, "every change reaches downstream"
    assert any(by_id[cid] >= 2 for cid in unmarked), "unmarked changes are published again"

    order: dict[str, list[int]] = defaultdict(list)
    for body, key in received:
        assert key == body["customer_id"], "the customer is the ordering key"
        if body["change_id"] not in order[key]:
            order[key].append(body["change_id"])
    expected = defaultdict(list)
    for cid, customer, _ in stored:
        expected[customer].append(cid)
    assert dict(order) == dict(expected), "first deliveries come in change order per customer"


def test_a_change_message_carries_what_downstream_tools_need(live):
    path = downstream_subscription(live)
    with started(live, publish_changes=True) as consumer:
        consumer.process([incoming(event("eve", "purchase", utc_now(), order_value=99.0,
                                         order_id="o1"))])
        consumer.flush_changes()
    (cid, _, _), = [c for c in changes(live) if c[1] == "eve"]
    [(body, key)] = [r for r in receive(path, {cid}) if r[0]["change_id"] == cid]
    assert key == "eve"
    assert body["segment"] == "recent_purchasers"
    assert body["change"] == "enter"
    assert body["source"] == "realtime"
    assert body["changed_at"].endswith("Z")
    assert body["attributes"]["revenue_3d"] == 99.0
