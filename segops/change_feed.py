"""The change feed: every row of segment_membership_changes, published to Pub/Sub from the outbox
(segops/live_outbox.py) by the consumer that holds its lease.

A change is marked published only after Pub/Sub accepted it, so a crash between publishing and
marking publishes it again rather than losing it: downstream sees each change at least once,
in order per customer (the customer is the ordering key).
"""

from __future__ import annotations

import json
import logging
from concurrent import futures
from dataclasses import dataclass, field

from google.cloud import pubsub_v1

from segops.pubsub import topic_path
from segops.settings import Settings

log = logging.getLogger(__name__)

BATCH = 10_000


def change_message(row: tuple) -> tuple[bytes, dict[str, str]]:
    """The JSON body and the filterable attributes of one change."""
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
    return json.dumps(body).encode(), {"segment": segment, "change": change, "source": source}


@dataclass
class ChangeFeed:
    """Hands changes to Pub/Sub and reports which it accepted."""

    settings: Settings
    publisher: pubsub_v1.PublisherClient = field(init=False)
    in_flight: dict[int, tuple[str, futures.Future]] = field(default_factory=dict)
    last_error: BaseException | None = None  # the latest refusal, kept for reporting

    def __post_init__(self) -> None:
        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.01),
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        )
        self.topic = topic_path(self.settings, self.settings.changes_topic)

    def publish(self, rows: list[tuple]) -> None:
        for row in rows:
            data, attributes = change_message(row)
            self.in_flight[row[0]] = (
                row[2],
                self.publisher.publish(self.topic, data, ordering_key=row[2], **attributes),
            )

    def accepted(self, wait: float = 0) -> list[int]:
        """Change ids Pub/Sub has accepted since the last call; the refused ones leave
        `in_flight`, so the outbox hands them out again, their ordering keys resumed."""
        if wait:
            futures.wait([f for _, f in self.in_flight.values()], timeout=wait)
        done = {cid: kf for cid, kf in self.in_flight.items() if kf[1].done()}
        for cid in done:
            del self.in_flight[cid]
        failed = sorted(cid for cid, (_, f) in done.items() if f.exception() is not None)
        if failed:
            self.last_error = done[failed[0]][1].exception()
            log.warning("publishing %d changes failed (%s); will retry", len(failed),
                        self.last_error)
            for key in {done[cid][0] for cid in failed}:
                self.publisher.resume_publish(self.topic, key)
        return sorted(set(done) - set(failed))
