"""The Pub/Sub source against the emulator: flow control, deadlines extended while a batch is
held, acks in bulk, and what a stop hands back."""

from __future__ import annotations

import time

from segops.pubsub import ACK_DEADLINE_SECONDS, subscription_path
from streaming.source import ACKS_PER_REQUEST, PubSubSource
from tests.stream_helpers import publish_all


def take(source: PubSubSource, count: int, timeout: float = 30.0) -> list:
    """Batches from `source` until `count` messages came."""
    taken: list = []
    deadline = time.monotonic() + timeout
    while len(taken) < count and time.monotonic() < deadline:
        taken += source.next_batch(max_size=count - len(taken), max_wait=0.5)
    assert len(taken) == count, f"{len(taken)} of {count} messages within {timeout}s"
    return taken


def test_a_consumer_keeps_what_it_holds_and_a_stop_hands_back_what_it_did_not_ack(pubsub):
    published = 2 * ACKS_PER_REQUEST + 10  # the other consumer's acks take three requests
    publish_all(pubsub, [f"m{n}".encode() for n in range(published)])
    path = subscription_path(pubsub)
    holder, other = PubSubSource(path, max_outstanding=10), PubSubSource(path)
    holder.start()
    try:
        held = take(holder, 10)
        assert holder.next_batch(max_size=100, max_wait=1.0) == [], \
            "flow control: nothing more is pulled while ten are held"
        for message in held[:4]:
            message.ack()
        held = held[4:] + take(holder, 4)  # room for four more
        other.start()
        for message in take(other, published - 14):
            message.ack()
        # Past the subscription's ack deadline: the holder's messages stay with it (their
        # deadlines extended), and what was acked is not delivered again.
        until = time.monotonic() + ACK_DEADLINE_SECONDS + 3
        while (remaining := until - time.monotonic()) > 0:
            assert other.next_batch(max_size=100, max_wait=remaining) == []
    finally:
        holder.stop()
    try:
        back = take(other, len(held))
    finally:
        other.stop()
    assert sorted(m.data for m in back) == sorted(m.data for m in held), \
        "what the holder did not ack, and only that, is delivered again"
