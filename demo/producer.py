"""Publish events to the events topic at a steady rate, for demos, tests and load."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from google.api_core.exceptions import GoogleAPIError
from google.pubsub_v1 import PubsubMessage

from segops.pubsub import (
    REQUEST_MESSAGES,
    REQUEST_SECONDS,
    RequestPublisher,
    bounded_retry,
    in_requests,
    request_publisher,
    topic_path,
)
from segops.settings import Settings

log = logging.getLogger(__name__)
# A paced publisher sends what is due and sleeps once it is this far ahead: sleeping before
# every message (every millisecond at 1,000 a second) costs more CPU than publishing it.
PACE_SECONDS = 0.02


@dataclass(frozen=True)
class PublishReport:
    published: int
    failed: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0


def _send(publisher: RequestPublisher, topic: str, messages: list[PubsubMessage]) -> int:
    """Publish `messages` in requests and clear them; how many Pub/Sub refused."""
    refused = 0
    for request in in_requests(messages):
        try:
            publisher.publish(topic=topic, messages=request,
                              retry=bounded_retry(REQUEST_SECONDS), timeout=REQUEST_SECONDS)
        except GoogleAPIError as error:
            log.error("publishing %d messages failed: %s", len(request), error)
            refused += len(request)
    messages.clear()
    return refused


def publish(
    settings: Settings,
    messages: Iterable[dict | bytes],
    *,
    rate: float | None = None,
    duration: float | None = None,
    publisher: RequestPublisher | None = None,
) -> PublishReport:
    """Publish each message (a dict is sent as JSON), paced at `rate` per second if given, in
    requests of up to a thousand: one client call per request rather than per message, which
    keeps a load generator's CPU small beside what it loads.

    Stops when `messages` ends or after `duration` seconds, once what it gathered is sent.
    """
    publisher = publisher or request_publisher()
    topic = topic_path(settings, settings.events_topic)
    pending: list[PubsubMessage] = []
    gathered = refused = 0
    started = time.monotonic()
    for index, message in enumerate(messages):
        elapsed = time.monotonic() - started
        if duration is not None and elapsed >= duration:
            break
        if rate and index / rate - elapsed > PACE_SECONDS:
            refused += _send(publisher, topic, pending)  # everything due so far
            time.sleep(max(0.0, index / rate - (time.monotonic() - started)))
        pending.append(PubsubMessage(
            data=message if isinstance(message, bytes) else json.dumps(message).encode()))
        gathered += 1
        if len(pending) >= REQUEST_MESSAGES:
            refused += _send(publisher, topic, pending)
    refused += _send(publisher, topic, pending)
    return PublishReport(published=gathered - refused, failed=refused,
                         seconds=time.monotonic() - started)
