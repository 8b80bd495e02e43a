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
    REQUEST_SECONDS,
    RequestPublisher,
    bounded_retry,
    full_request,
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


def make_publisher() -> RequestPublisher:
    return request_publisher()


@dataclass
class _Requests:
    """Messages gathered into publish requests, each sent when full or when asked."""

    publisher: RequestPublisher
    topic: str
    messages: list[PubsubMessage]
    size: int = 0
    published: int = 0
    failed: int = 0

    def add(self, data: bytes) -> None:
        if full_request(self.messages, self.size, len(data)):
            self.send()
        self.messages.append(PubsubMessage(data=data))
        self.size += len(data)

    def send(self) -> None:
        if not self.messages:
            return
        try:
            self.publisher.publish(topic=self.topic, messages=self.messages,
                                   retry=bounded_retry(REQUEST_SECONDS), timeout=REQUEST_SECONDS)
            self.published += len(self.messages)
        except GoogleAPIError as error:
            log.error("publishing %d messages failed: %s", len(self.messages), error)
            self.failed += len(self.messages)
        self.messages, self.size = [], 0


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
    requests = _Requests(publisher or make_publisher(),
                         topic_path(settings, settings.events_topic), [])
    started = time.monotonic()
    for index, message in enumerate(messages):
        elapsed = time.monotonic() - started
        if duration is not None and elapsed >= duration:
            break
        if rate and index / rate - elapsed > PACE_SECONDS:
            requests.send()  # everything due so far
            time.sleep(max(0.0, index / rate - (time.monotonic() - started)))
        requests.add(message if isinstance(message, bytes) else json.dumps(message).encode())
    requests.send()
    return PublishReport(published=requests.published, failed=requests.failed,
                         seconds=time.monotonic() - started)
