"""Where messages come from: the `MessageSource` the consumer reads micro-batches from, and its
Pub/Sub implementation, unary pulls from the events subscription.

Each pull asks for up to a thousand messages and the acks go back a thousand to a request: the
library's streaming pull hands messages over one callback at a time, which on the emulator tops
out near 2,000 a second, a fifth of what a consumer can store and evaluate. What the library did
besides, this source does itself: flow control caps how many messages are held (pulled, not yet
acked), so a consumer that cannot commit (a slow batch, PostgreSQL away) stops pulling instead
of growing, and the ack deadlines of held messages are extended until they are acked.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from google.api_core import exceptions
from google.protobuf.message import Message
from google.pubsub_v1 import PullResponse

from segops.pubsub import ACK_DEADLINE_SECONDS, describe_target, request_subscriber

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

# One pull returns at most this many messages (Pub/Sub's limit), one acknowledge takes this many
# ack ids (well inside its 512 kB request).
PULL_MESSAGES = 1_000
ACKS_PER_REQUEST = 1_000
# How long one pull waits for messages when none are there; it bounds how long stopping takes.
PULL_SECONDS = 2.0
# Held messages get their deadline pushed this far ahead, this often, for at most an hour: a
# crashed consumer's messages come back within seconds, a live one's stay with it.
LEASE_SECONDS = ACK_DEADLINE_SECONDS
EXTEND_EVERY_SECONDS = LEASE_SECONDS / 3
MAX_LEASE_SECONDS = 3600.0
# Seconds between pulls while Pub/Sub does not answer, doubling up to the cap.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0


@dataclass(eq=False)
class Pulled:
    """One pulled message; `ack` and `nack` hand its ack id to the source, which sends them in
    bulk."""

    data: bytes
    message_id: str
    attributes: Mapping[str, str]
    publish_time: datetime | None
    ack_id: str
    source: PubSubSource

    def ack(self) -> None:
        self.source.settle(self.ack_id, acked=True)

    def nack(self) -> None:
        self.source.settle(self.ack_id, acked=False)


class PubSubSource:
    """The events subscription, read by one thread that pulls and one that sends acks and
    extends deadlines; `next_batch` and the acks are the consumer's."""

    def __init__(self, subscription: str, *, max_outstanding: int = 5000):
        self.subscription = subscription
        self.max_outstanding = max_outstanding
        self._queue: queue.Queue[tuple[float, Pulled]] = queue.Queue()  # (arrived, message)
        self._client = None
        self._lock = threading.Condition()
        self._held: dict[str, float] = {}  # ack id -> when pulled (monotonic)
        self._acks: list[str] = []
        self._nacks: list[str] = []
        self._settled = threading.Event()  # acks or nacks wait to be sent
        self._stopping = threading.Event()  # no more pulls
        self._closing = threading.Event()  # nothing more to settle: send the rest and end
        self._threads: list[threading.Thread] = []
        self._trouble: str | None = None

    def start(self) -> None:
        self._client = request_subscriber()
        self._threads = [threading.Thread(target=self._pull_loop, name="pubsub-pull",
                                          daemon=True),
                         threading.Thread(target=self._lease_loop, name="pubsub-acks",
                                          daemon=True)]
        for thread in self._threads:
            thread.start()

    # -- pulling -------------------------------------------------------------------------------

    def _pull_loop(self) -> None:
        delay = 0.0
        while not self._stopping.wait(delay):
            with self._lock:
                while len(self._held) >= self.max_outstanding and not self._stopping.is_set():
                    self._lock.wait(EXTEND_EVERY_SECONDS)
                room = min(PULL_MESSAGES, self.max_outstanding - len(self._held))
            if room <= 0:
                continue
            try:
                response = self._client.pull(subscription=self.subscription, max_messages=room,
                                             timeout=PULL_SECONDS, retry=None)
            except exceptions.DeadlineExceeded:  # nothing came within the wait
                delay = 0.0
                continue
            except exceptions.GoogleAPICallError as error:
                self._trouble_with(error)
                delay = min(max(delay * 2, RETRY_FIRST_SECONDS), RETRY_MAX_SECONDS)
                continue
            delay = 0.0
            self._back()
            self._arrived(PullResponse.pb(response).received_messages)

    def _arrived(self, received: Sequence[Message]) -> None:
        """The pulled messages held and queued, read from the raw protobuf response: through
        the library's wrappers, each field read costs microseconds, 16 ms a pull of a thousand
        on the thread the consumer shares its interpreter with."""
        arrived = time.monotonic()
        messages = [self._pulled(r.ack_id, r.message) for r in received]
        with self._lock:
            self._held.update((message.ack_id, arrived) for message in messages)
        for message in messages:  # pulled while stopping: `stop` hands them back
            self._queue.put((arrived, message))

    def _pulled(self, ack_id: str, message: Message) -> Pulled:
        publish_time = (message.publish_time.ToDatetime(tzinfo=UTC)
                        if message.HasField("publish_time") else None)
        return Pulled(data=message.data, message_id=message.message_id,
                      attributes=dict(message.attributes), publish_time=publish_time,
                      ack_id=ack_id, source=self)

    def _trouble_with(self, error: Exception) -> None:
        """Say once that Pub/Sub or the subscription is gone (and, in `_back`, once that it is
        back); the pulls go on with a backoff, so the stream resumes by itself."""
        if isinstance(error, exceptions.NotFound):
            trouble = (f"subscription {self.subscription} does not exist on "
                       f"{describe_target()} (create it with `segops init`)")
        elif isinstance(error, exceptions.ServiceUnavailable):
            trouble = f"cannot reach {describe_target()} ({error.__class__.__name__})"
        else:
            trouble = f"pulling from {self.subscription} failed: {error}"
        if trouble != self._trouble:
            log.warning("%s; nothing is lost, the stream resumes by itself when it is back",
                        trouble)
        self._trouble = trouble

    def _back(self) -> None:
        if self._trouble:
            log.warning("Pub/Sub is back; pulling from %s again", self.subscription)
        self._trouble = None

    # -- acks and leases -----------------------------------------------------------------------

    def settle(self, ack_id: str, *, acked: bool) -> None:
        """Done with one message: acked (committed) or nacked (to be delivered again)."""
        with self._lock:
            if self._held.pop(ack_id, None) is None:
                return  # settled already, or its lease ran out
            (self._acks if acked else self._nacks).append(ack_id)
            if len(self._held) == self.max_outstanding - 1:  # room again: the puller may go on
                self._lock.notify_all()
        self._settled.set()

    def _lease_loop(self) -> None:
        extended = time.monotonic()
        while True:
            self._settled.wait(EXTEND_EVERY_SECONDS)
            self._settled.clear()
            closing = self._closing.is_set()
            self._send_settled()
            if closing:
                return
            if time.monotonic() - extended >= EXTEND_EVERY_SECONDS:
                extended = time.monotonic()
                self._extend(extended)

    def _send_settled(self) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
            nacks, self._nacks = self._nacks, []
        for start in range(0, len(acks), ACKS_PER_REQUEST):
            self._request("acknowledge", acks[start:start + ACKS_PER_REQUEST])
        for start in range(0, len(nacks), ACKS_PER_REQUEST):
            self._request("modify_ack_deadline", nacks[start:start + ACKS_PER_REQUEST],
                          ack_deadline_seconds=0)

    def _extend(self, now: float) -> None:
        """Push the deadlines of held messages ahead; one held past MAX_LEASE_SECONDS is let
        go (it is delivered again, and its events deduplicated)."""
        with self._lock:
            for ack_id in [a for a, pulled in self._held.items()
                           if now - pulled > MAX_LEASE_SECONDS]:
                del self._held[ack_id]
            held = list(self._held)
        for start in range(0, len(held), ACKS_PER_REQUEST):
            self._request("modify_ack_deadline", held[start:start + ACKS_PER_REQUEST],
                          ack_deadline_seconds=LEASE_SECONDS)

    def _request(self, method: str, ack_ids: list[str], **fields) -> None:
        """One acknowledge or deadline change; when it fails, the messages are delivered again
        after their deadline and their events deduplicated, so a failure is only logged."""
        try:
            getattr(self._client, method)(subscription=self.subscription, ack_ids=ack_ids,
                                          timeout=PULL_SECONDS, retry=None, **fields)
        except exceptions.GoogleAPICallError as error:
            log.info("%s of %d messages failed (%s); they are delivered again",
                     method, len(ack_ids), error.__class__.__name__)

    # -- the consumer's side -------------------------------------------------------------------

    def next_batch(self, max_size: int, max_wait: float) -> list[Pulled]:
        """Up to `max_size` messages: whatever arrives within `max_wait` of the first one.

        The window counts from the first message's arrival, not from when it is taken: messages
        that queued up while the previous batch was committed have waited long enough, so they
        go at once with whatever else is queued.
        """
        try:
            arrived, first = self._queue.get(timeout=max_wait)
        except queue.Empty:
            return []
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
        """Stop pulling and hand back every message held and not acked (queued, or in a batch
        that did not commit) for redelivery at once; what is still to send goes before the
        client closes."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        pulling, acking = self._threads or (None, None)
        if pulling is not None:
            pulling.join(timeout=PULL_SECONDS + 5)
        with self._lock:
            self._nacks.extend(self._held)
            self._held.clear()
        self._closing.set()
        self._settled.set()
        if acking is not None:
            acking.join(timeout=PULL_SECONDS * 4)
        if self._client is not None:
            self._client.transport.close()
