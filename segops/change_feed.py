"""The change feed: every row of segment_membership_changes, published to Pub/Sub from the outbox
(segops/live_outbox.py) by the consumer that holds its lease.

A change is marked published only after Pub/Sub accepted it, so a crash between publishing and
marking publishes it again rather than losing it: downstream sees each change at least once,
in order per customer (the customer is the ordering key).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
from concurrent import futures
from dataclasses import dataclass, field

from google.pubsub_v1 import PubsubMessage

from segops.pubsub import (
    REQUEST_SECONDS,
    bounded_retry,
    in_requests,
    request_publisher,
    topic_path,
)
from segops.settings import Settings

log = logging.getLogger(__name__)

BATCH = 10_000


class Halted(Exception):
    """Not sent: an earlier request failed, and nothing may overtake its changes."""


def change_message(row: tuple) -> PubsubMessage:
    """One change as a message: the JSON body, the filterable attributes and the customer as
    ordering key."""
    change_id, segment, customer_id, change, changed_at, source, attributes = row
    body = {
        "change_id": change_id,
        "segment": segment,
        "customer_id": customer_id,
        "change": change,
        "changed_at": changed_at.isoformat(timespec="milliseconds") + "Z",
        "source": source,
        "attributes": json.loads(attributes) if attributes else None,
    }
    return PubsubMessage(data=json.dumps(body).encode(), ordering_key=customer_id,
                         attributes={"segment": segment, "change": change, "source": source})


@dataclass
class ChangeFeed:
    """Hands changes to Pub/Sub and reports which it accepted.

    The client library batches messages per ordering key, so with the customer as key nearly
    every change would be a request of its own (about 600 a second here). Instead one thread
    sends requests of up to a thousand changes, of any customers, one after another in the
    outbox's order: a customer's changes reach Pub/Sub in order because the requests do. When
    one fails, the ones queued after it are not sent (Halted) until the consumer has seen the
    failure, so the outbox hands all of them out again, in order."""

    settings: Settings
    in_flight: dict[int, futures.Future] = field(default_factory=dict)
    last_error: BaseException | None = None  # the latest refusal, kept for reporting

    def __post_init__(self) -> None:
        self.topic = topic_path(self.settings, self.settings.changes_topic)
        self._api = request_publisher()
        self._queue: queue.SimpleQueue | None = None  # the running sender's
        self._halted = threading.Event()

    @property
    def halted(self) -> bool:
        return self._halted.is_set()

    def publish(self, rows: list[tuple]) -> None:
        if self._queue is None:  # a sender of its own: one left closing may still be sending
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._send_in_order, args=(self._queue,), daemon=True,
                             name="change-feed").start()
        change_ids = iter([row[0] for row in rows])
        for request in in_requests([change_message(row) for row in rows]):
            sent: futures.Future = futures.Future()
            self._queue.put((sent, request))
            self.in_flight.update(dict.fromkeys(itertools.islice(change_ids, len(request)), sent))

    def _send_in_order(self, requests: queue.SimpleQueue) -> None:
        while (request := requests.get()) is not None:
            sent, messages = request
            if self._halted.is_set():
                sent.set_exception(Halted())
                continue
            try:
                self._api.publish(topic=self.topic, messages=messages,
                                  retry=bounded_retry(REQUEST_SECONDS), timeout=REQUEST_SECONDS)
            except Exception as error:
                self._halted.set()
                sent.set_exception(error)
            else:
                sent.set_result(None)

    def answered(self) -> bool:
        """Whether Pub/Sub has accepted or refused any of the changes in flight."""
        return any(sent.done() for sent in set(self.in_flight.values()))

    def accepted(self, wait: float = 0) -> list[int]:
        """Change ids Pub/Sub has accepted since the last call; the refused ones leave
        `in_flight`, so the outbox hands them out again once nothing is left in flight."""
        if wait:
            futures.wait(set(self.in_flight.values()), timeout=wait)
        done = {cid: sent for cid, sent in self.in_flight.items() if sent.done()}
        for cid in done:
            del self.in_flight[cid]
        failed = {cid for cid, sent in done.items() if sent.exception() is not None}
        refusals = [e for e in {done[cid].exception() for cid in failed}
                    if not isinstance(e, Halted)]
        if refusals:
            self.last_error = refusals[0]
            log.warning("publishing %d changes failed (%s); will retry", len(failed),
                        self.last_error)
        if self._halted.is_set() and not self.in_flight:
            self._halted.clear()
        return sorted(set(done) - failed)

    def close(self) -> None:
        """Let the sending thread end once what it holds is sent (or refused)."""
        if self._queue is not None:
            self._queue.put(None)
            self._queue = None
