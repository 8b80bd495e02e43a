"""Where messages come from: the `MessageSource` the consumer reads micro-batches from, and its
Pub/Sub implementation, a streaming pull from the events subscription.

Flow control caps how many messages wait in memory, so a consumer that cannot commit (a slow
batch, PostgreSQL away) stops pulling instead of growing; the client keeps extending their ack
deadlines meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.subscriber.scheduler import Scheduler

from segops.pubsub import UNREACHABLE, bounded_retry, describe_target

log = logging.getLogger(__name__)


class Delivered(Protocol):
    """One delivered message: its payload and metadata, acknowledged once it is committed."""

    data: bytes
    message_id: str
    attributes: Mapping[str, str]
    publish_time: datetime | None

    def ack(self) -> None: ...


class MessageSource(Protocol):
    """What the consumer reads from: Pub/Sub in production, anything with the same calls in
    tests and benchmarks."""

    def start(self) -> None: ...

    def next_batch(self, max_size: int, max_wait: float) -> Sequence[Delivered]:
        """Up to `max_size` messages, waiting at most `max_wait` s; empty when none came."""
        ...

    def stop(self) -> None:
        """Stop receiving; what was received but not acked is redelivered later."""
        ...


@dataclass(frozen=True)
class Incoming:
    """One message as the consumer needs it, whatever delivered it (Pub/Sub, replay, tests)."""

    data: bytes
    message_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    publish_time: datetime | None = None

    @classmethod
    def of(cls, message: Delivered) -> Incoming:
        publish_time = message.publish_time
        return cls(
            data=message.data,
            message_id=message.message_id,
            attributes=dict(message.attributes),
            publish_time=publish_time.replace(tzinfo=None) if publish_time else None,
        )

LEASE_SECONDS = 10
MAX_RECONNECT_DELAY = 30.0
# The client retries a broken stream silently; this often we ask Pub/Sub directly, so an outage
# (or a subscription that vanished) is said in the log, once, and its end too.
HEALTH_CHECK_SECONDS = 5.0


class InlineScheduler(Scheduler):
    """Hands each message to the callback in the client's own thread, not a thread pool.

    The callback only queues the message for the next micro-batch. The client's default pool
    wakes a thread per message, a thousand a second, each hop contending for the interpreter
    lock with the thread that evaluates the batch.
    """

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()

    @property
    def queue(self) -> queue.Queue:
        return self._queue

    def schedule(self, callback, *args, **kwargs) -> None:
        callback(*args, **kwargs)

    def shutdown(self, await_msg_callbacks: bool = False) -> list[Message]:
        return []  # nothing waits: every message was handed over when it was scheduled


class PubSubSource:
    def __init__(self, subscription: str, *, max_outstanding: int = 5000):
        self.subscription = subscription
        self.max_outstanding = max_outstanding
        self._queue: queue.Queue[tuple[float, Message]] = queue.Queue()  # (arrived, message)
        self._subscriber: pubsub_v1.SubscriberClient | None = None
        self._future = None
        self._reconnect_delay = 0.5
        self._reconnect_at = 0.0
        self._next_health_check = 0.0
        self._trouble: str | None = None

    def start(self) -> None:
        self._subscriber = pubsub_v1.SubscriberClient()
        self._open_stream()

    def _open_stream(self) -> None:
        self._future = self._subscriber.subscribe(
            self.subscription,
            callback=self._arrived,
            scheduler=InlineScheduler(),
            flow_control=pubsub_v1.types.FlowControl(
                max_messages=self.max_outstanding,
                max_lease_duration=3600,
                # Keep each lease short (extended while we work), so what a crashed consumer
                # held is redelivered within seconds rather than a minute.
                max_duration_per_lease_extension=LEASE_SECONDS,
            ),
        )

    def ensure_streaming(self) -> None:
        """Reopen the stream if it ended (the emulator restarted, the network dropped), backing
        off while it keeps failing so an outage is a few log lines, not a reconnect storm."""
        if self._future is None or not self._future.done():
            return
        now = time.monotonic()
        if now < self._reconnect_at:
            return
        log.warning("streaming pull from %s stopped (%s); reconnecting (next try in %.0fs "
                    "if this fails)", self.subscription, self._future.exception(),
                    self._reconnect_delay)
        self._reconnect_at = now + self._reconnect_delay
        self._reconnect_delay = min(self._reconnect_delay * 2, MAX_RECONNECT_DELAY)
        self._open_stream()

    def check_health(self) -> None:
        """Log, once, when Pub/Sub or the subscription is gone, and when it is back."""
        now = time.monotonic()
        if now < self._next_health_check:
            return
        self._next_health_check = now + HEALTH_CHECK_SECONDS
        try:
            self._subscriber.get_subscription(
                subscription=self.subscription, retry=bounded_retry(3), timeout=3
            )
        except UNREACHABLE as error:
            trouble = f"cannot reach {describe_target()} ({error.__class__.__name__})"
        except exceptions.PermissionDenied:
            # The subscriber role may not read subscriptions; the client still reconnects.
            log.info("no permission to read %s; outages will not be logged", self.subscription)
            self._next_health_check = float("inf")
            return
        except exceptions.NotFound:
            trouble = (f"subscription {self.subscription} does not exist on "
                       f"{describe_target()} (create it with `segops init`)")
        else:
            self._back()
            return
        if trouble != self._trouble:
            log.warning("%s; nothing is lost, the stream resumes by itself when it is back",
                        trouble)
        self._trouble = trouble

    def _back(self) -> None:
        """Say once that an outage is over: at the next health check, or as soon as messages
        flow again, whichever comes first."""
        if self._trouble:
            log.warning("Pub/Sub is back; streaming from %s again", self.subscription)
        self._trouble = None

    def _arrived(self, message: Message) -> None:
        self._queue.put((time.monotonic(), message))

    def next_batch(self, max_size: int, max_wait: float) -> list[Message]:
        """Up to `max_size` messages: whatever arrives within `max_wait` of the first one.

        The window counts from the first message's arrival, not from when it is taken: messages
        that queued up while the previous batch was committed have waited long enough, so they
        go at once with whatever else is queued.
        """
        self.ensure_streaming()
        self.check_health()
        try:
            arrived, first = self._queue.get(timeout=max_wait)
        except queue.Empty:
            return []
        self._reconnect_delay = 0.5  # messages flow again
        self._back()
        batch = [first]
        deadline = arrived + max_wait
        while len(batch) < max_size:
            remaining = deadline - time.monotonic()
            try:
                _, message = (self._queue.get(timeout=remaining) if remaining > 0
                              else self._queue.get_nowait())
            except queue.Empty:
                break
            batch.append(message)
        return batch

    def stop(self) -> None:
        """Stop pulling and hand back what was pulled but not processed, for redelivery: nacked
        before the stream closes, while the client still sends requests (after, a nack is
        dropped and the message waits out its lease); the client nacks what it held itself."""
        self._nack_queued()
        if self._future is not None:
            self._future.cancel()
            # A cancelled stream reports its cancellation as an error; that is expected here.
            with contextlib.suppress(Exception):
                self._future.result(timeout=10)
        if self._subscriber is not None:
            self._subscriber.close()

    def _nack_queued(self) -> None:
        while True:
            try:
                self._queue.get_nowait()[1].nack()
            except queue.Empty:
                break
