"""`segops init` and `segops produce` against the emulator."""

from __future__ import annotations

import json
import time

from google.cloud import pubsub_v1

from segops.clock import utc_now
from segops.events import Event
from segops.pubsub import ensure_pubsub, subscription_path
from segops.tracking_plan import load_plan
from segops_cli.main import main
from streaming.validation import validate


def pull_all(settings, expected: int, timeout: float = 30) -> list[bytes]:
    subscriber = pubsub_v1.SubscriberClient()
    path = subscription_path(settings)
    received: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        response = subscriber.pull(subscription=path, max_messages=1000, timeout=10)
        if response.received_messages:
            subscriber.acknowledge(
                subscription=path, ack_ids=[m.ack_id for m in response.received_messages]
            )
        received += [m.message.data for m in response.received_messages]
    subscriber.close()
    return received


def test_init_creates_the_live_tables_topics_and_subscription_once(live, capsys):
    main(["init"])
    said = capsys.readouterr().out
    assert "live tables ready in PostgreSQL" in said and "Pub/Sub ready" in said
    assert ensure_pubsub(live) == [], "a second run finds everything in place"
    publisher = pubsub_v1.PublisherClient()
    topics = {t.name.rsplit("/", 1)[1] for t in publisher.list_topics(
        request={"project": f"projects/{live.pubsub_project}"})}
    assert topics == {"events", "segment-changes"}


def test_produce_publishes_valid_shop_traffic(pubsub, capsys):
    ensure_pubsub(pubsub)
    main(["produce", "--rate", "200", "--duration", "1", "--customers", "500"])
    out = capsys.readouterr().out
    published = int(out.split("published ")[1].split(" ")[0].replace(",", ""))
    assert 100 <= published <= 220
    messages = pull_all(pubsub, published)
    assert len(messages) == published
    events = [validate(m, utc_now(), load_plan()) for m in messages]
    assert all(isinstance(e, Event) for e in events)
    types = {e.event_type for e in events}
    assert {"session_start", "product_view"} <= types
    assert len({json.loads(m)["customer_id"] for m in messages}) > 5
