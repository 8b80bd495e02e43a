"""Publish events to the events topic at a steady rate, for demos, tests and load."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass

from google.cloud import pubsub_v1

from segops.pubsub import topic_path
from segops.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishReport:
    published: int
    failed: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0


def make_publisher() -> pubsub_v1.PublisherClient:
    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(
            max_messages=500, max_bytes=4 * 1024 * 1024, max_latency=0.005
        )
    )


def publish(
    settings: Settings,
    messages: Iterable[dict | bytes],
    *,
    rate: float | None = None,
    duration: float | None = None,
    publisher: pubsub_v1.PublisherClient | None = None,
) -> PublishReport:
    """Publish each message (a dict is sent as JSON), paced at `rate` per second if given.

    Stops when `messages` ends or after `duration` seconds, then waits for every publish.
    """
    publisher = publisher or make_publisher()
    topic = topic_path(settings, settings.events_topic)
    pending: list[futures.Future] = []
    started = time.monotonic()
    for index, message in enumerate(messages):
        elapsed = time.monotonic() - started
        if duration is not None and elapsed >= duration:
            break
        if rate:
            ahead = index / rate - elapsed
            if ahead > 0:
                time.sleep(ahead)
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        pending.append(publisher.publish(topic, data))
    done, _ = futures.wait(pending)
    failed = sum(1 for f in done if f.exception() is not None)
    if failed:
        log.error("%d of %d publishes failed: %s", failed, len(pending),
                  next(f.exception() for f in done if f.exception() is not None))
    return PublishReport(
        published=len(pending) - failed, failed=failed, seconds=time.monotonic() - started
    )
