"""The change feed: every membership change reaches `segment-changes`, at least once, in order."""

from __future__ import annotations

from collections import defaultdict
from concurrent import futures
from datetime import timedelta

from demo.traffic import event
from segops.clock import utc_now
from segops.warehouse import connect
from streaming.consumer import Consumer
from tests.stream_helpers import downstream_subscription, incoming, receive


def changes(settings) -> list[tuple]:
    with connect(settings.warehouse, read_only=True) as con:
        return con.execute(
            "select change_id, customer_id, published_at from segops.segment_membership_changes"
            " order by change_id"
        ).fetchall()


def test_a_crash_before_marking_republishes_and_downstream_sees_every_change_in_order(
    warehouse, pubsub
):
    path = downstream_subscription(pubsub)
    now = utc_now()
    first = Consumer(pubsub)
    first.start()
    for minute, customer in enumerate(["ann", "bob", "ann", "cy", "bob"]):
        first.process([incoming(event(customer, "purchase", now + timedelta(seconds=minute),
                                      order_value=10.0, order_id=f"o{minute}")),
                       incoming(event(customer, "signup", now))])
    futures.wait([f for _, f in first.feed.in_flight.values()])
    first.process([])  # Pub/Sub accepted the first batches' changes; this marks them
    published_before_crash = {cid for cid, _, at in changes(pubsub) if at is not None}
    first.process([incoming(event("dee", "signup", now))])
    # kill -9 here: dee's changes were handed to Pub/Sub but never marked published.
    first.feed.publisher.stop()
    del first

    unmarked = {cid for cid, _, at in changes(pubsub) if at is None}
    assert unmarked, "the crash must leave changes Pub/Sub accepted but not marked"
    assert published_before_crash

    second = Consumer(pubsub)
    second.start()
    second.process([])
    second.flush_changes()
    stored = changes(pubsub)
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


def test_a_change_message_carries_what_downstream_tools_need(warehouse, pubsub):
    path = downstream_subscription(pubsub)
    consumer = Consumer(pubsub)
    consumer.start()
    consumer.process([incoming(event("eve", "purchase", utc_now(), order_value=99.0,
                                     order_id="o1"))])
    consumer.flush_changes()
    (cid, _, _), = [c for c in changes(pubsub) if c[1] == "eve"]
    [(body, key)] = [r for r in receive(path, {cid}) if r[0]["change_id"] == cid]
    assert key == "eve"
    assert body["segment"] == "recent_purchasers"
    assert body["change"] == "enter"
    assert body["source"] == "realtime"
    assert body["changed_at"].endswith("Z")
    assert body["attributes"]["revenue_3d"] == 99.0
