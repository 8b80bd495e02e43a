"""Pub/Sub topics and subscriptions, created idempotently.

The same client talks to the emulator when PUBSUB_EMULATOR_HOST is set and to Google Cloud
(Application Default Credentials) otherwise.
"""

from __future__ import annotations

import os
from typing import TypeVar

from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1
from google.pubsub_v1 import PubsubMessage
from google.pubsub_v1.services.publisher import PublisherClient as RequestPublisher
from google.pubsub_v1.services.subscriber import SubscriberClient as RequestSubscriber

from segops.errors import SegOpsError
from segops.settings import Settings

T = TypeVar("T")

# Pub/Sub takes at most 1,000 messages and 10 MB in one publish request.
REQUEST_MESSAGES = 1_000
REQUEST_BYTES = 9_000_000
# How long one request is retried while Pub/Sub does not answer, before it counts as failed.
REQUEST_SECONDS = 30.0
# Short, so a crashed consumer's unacked messages come back quickly; the client extends the
# deadline of messages a live consumer is still working on.
ACK_DEADLINE_SECONDS = 10


class PubSubUnavailable(SegOpsError):
    """Pub/Sub (or its emulator) could not be reached."""


def describe_target() -> str:
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    return f"the Pub/Sub emulator at {host}" if host else "Google Cloud Pub/Sub"


def request_publisher() -> RequestPublisher:
    """The generated client, whose `publish` sends one request with the messages as given (the
    library's client batches them itself, per ordering key)."""
    return _generated(RequestPublisher)


def request_subscriber() -> RequestSubscriber:
    """The generated client, whose `pull` is one request for up to a thousand messages and whose
    `acknowledge` takes many at once (the library's streaming pull hands them over one by one)."""
    return _generated(RequestSubscriber)


def _generated(client: type[T]) -> T:
    """A generated Pub/Sub client, on the emulator when set, as the library's clients are."""
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if host:
        return client(client_options={"api_endpoint": host}, credentials=AnonymousCredentials())
    return client()


def in_requests(messages: list[PubsubMessage]) -> list[list[PubsubMessage]]:
    """`messages` in order, cut into publish requests within Pub/Sub's limits."""
    requests: list[list[PubsubMessage]] = []
    size = 0
    for message in messages:
        if (not requests or len(requests[-1]) >= REQUEST_MESSAGES
                or size + len(message.data) > REQUEST_BYTES):
            requests.append([])
            size = 0
        requests[-1].append(message)
        size += len(message.data)
    return requests


def topic_path(settings: Settings, topic: str) -> str:
    return pubsub_v1.PublisherClient.topic_path(settings.pubsub_project, topic)


def subscription_path(settings: Settings) -> str:
    return pubsub_v1.SubscriberClient.subscription_path(
        settings.pubsub_project, settings.subscription
    )


def unreachable(error: Exception) -> PubSubUnavailable:
    """The readable error for a Pub/Sub that did not answer: which host, and how to start it."""
    return PubSubUnavailable(
        f"cannot reach {describe_target()}: {error.__class__.__name__}. "
        "Start the emulator with `gcloud beta emulators pubsub start --host-port=127.0.0.1:8085` "
        "and set PUBSUB_EMULATOR_HOST=127.0.0.1:8085 (or run `make up`)"
    )


UNREACHABLE = (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded, exceptions.RetryError)


def bounded_retry(timeout: float) -> Retry:
    """Retry an unreachable Pub/Sub for `timeout` s in all (the default retries far longer)."""
    return Retry(predicate=if_exception_type(exceptions.ServiceUnavailable), timeout=timeout)


def check_topic(settings: Settings, topic: str, timeout: float = 10.0) -> None:
    """Fail fast and readably when Pub/Sub is unreachable or the topic does not exist."""
    publisher = pubsub_v1.PublisherClient()
    try:
        publisher.get_topic(
            topic=topic_path(settings, topic), retry=bounded_retry(timeout), timeout=timeout
        )
    except UNREACHABLE as error:
        raise unreachable(error) from None
    except exceptions.NotFound:
        raise PubSubUnavailable(
            f"topic {topic_path(settings, topic)} does not exist on {describe_target()}; "
            "create it with `segops init`"
        ) from None


def ensure_pubsub(settings: Settings, timeout: float = 10.0) -> list[str]:
    """Create the events and segment-changes topics and the consumer's subscription."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    created = []
    try:
        for topic in (settings.events_topic, settings.changes_topic):
            path = topic_path(settings, topic)
            try:
                publisher.create_topic(name=path, retry=bounded_retry(timeout), timeout=timeout)
                created.append(path)
            except exceptions.AlreadyExists:
                pass
        path = subscription_path(settings)
        try:
            subscriber.create_subscription(
                request={
                    "name": path,
                    "topic": topic_path(settings, settings.events_topic),
                    "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
                },
                retry=bounded_retry(timeout),
                timeout=timeout,
            )
            created.append(path)
        except exceptions.AlreadyExists:
            pass
    except UNREACHABLE as error:
        raise unreachable(error) from None
    finally:
        subscriber.close()
    return created
