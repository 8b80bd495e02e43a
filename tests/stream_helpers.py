"""Helpers for tests of the real-time path: publish, consume, read back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

import psycopg
from google.cloud import pubsub_v1

from demo.producer import publish
from segops.catalog import Catalog
from segops.clock import utc_now
from segops.pubsub import ensure_pubsub, subscription_path, topic_path
from segops.settings import Settings
from streaming.live_consumer import LiveConsumer
from streaming.source import Incoming, PubSubSource
from streaming.stream_loop import ConsumerConfig


def consume_until_idle(settings: Settings, idle: float = 2.0, **config) -> LiveConsumer:
    """Run the real consumer on the real subscription until no message came for `idle` s."""
    consumer = LiveConsumer(settings, ConsumerConfig(**config))
    consumer.run(PubSubSource(subscription_path(settings)), until_idle=idle)
    return consumer


def publish_all(settings: Settings, messages: Iterable[dict | bytes]) -> int:
    ensure_pubsub(settings)
    report = publish(settings, messages)
    assert report.failed == 0
    return report.published


def incoming(event: dict) -> Incoming:
    return Incoming(data=json.dumps(event).encode(), message_id=event["event_id"])


def rows(settings: Settings, sql: str, *params) -> list[tuple]:
    """`sql` on the live state in PostgreSQL, with `?` parameters as DuckDB's SQL has them."""
    with psycopg.connect(settings.postgres_dsn) as con:
        return con.execute(sql.replace("?", "%s"), list(params)).fetchall()


def members(settings: Settings, segment: str) -> dict[str, str]:
    """customer_id -> source of who is in `segment` now."""
    return dict(rows(settings, "select customer_id, source from segops.segment_membership "
                               "where segment = ?", segment))


def scalar(settings: Settings, sql: str, *params) -> object:
    return rows(settings, sql, *params)[0][0]


def realtime_segments(settings: Settings) -> list:
    return Catalog.load(settings.manifest_path).realtime_segments()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def downstream_subscription(settings) -> str:
    """A downstream tool's subscription, created before anything is published."""
    ensure_pubsub(settings)
    path = pubsub_v1.SubscriberClient.subscription_path(settings.pubsub_project, "crm")
    with pubsub_v1.SubscriberClient() as subscriber:
        subscriber.create_subscription(
            request={
                "name": path,
                "topic": topic_path(settings, settings.changes_topic),
                "enable_message_ordering": True,
            }
        )
    return path


def receive(path: str, expected_ids: set[int]) -> list[tuple[dict, str]]:
    """Pull (body, ordering key) pairs until every expected change came and nothing more does."""
    received: list[tuple[dict, str]] = []
    with pubsub_v1.SubscriberClient() as subscriber:
        for _ in range(100):
            response = subscriber.pull(request={"subscription": path, "max_messages": 500},
                                       timeout=5)
            for message in response.received_messages:
                received.append((json.loads(message.message.data),
                                 message.message.ordering_key))
            if response.received_messages:
                subscriber.acknowledge(request={
                    "subscription": path,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                })
            if expected_ids <= {body["change_id"] for body, _ in received} and not \
                    response.received_messages:
                break
    return received


@contextmanager
def consumer_running(settings: Settings, clock: Callable[[], datetime] = utc_now,
                     **config) -> Iterator[LiveConsumer]:
    """The real consumer on the real subscription, in a thread, for the `with` block."""
    consumer = LiveConsumer(settings, ConsumerConfig(**config), clock=clock)
    worker = threading.Thread(target=consumer.run,
                              args=(PubSubSource(subscription_path(settings)),), daemon=True)
    worker.start()
    try:
        yield consumer
    finally:
        consumer.stop()
        worker.join(timeout=30)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `condition()` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def consume_until(settings: Settings, condition: Callable[[], bool], timeout: float = 60.0,
                  **config) -> None:
    """Run the real consumer on the real subscription until `condition()` holds."""
    with consumer_running(settings, **config):
        wait_for(condition, timeout)
