"""The change feed: every row of segment_membership_changes, published to Pub/Sub by outbox.

A change is marked published only after Pub/Sub accepted it, so a crash between publishing and
marking publishes it again rather than losing it: downstream sees each change at least once,
in order per customer (the customer is the ordering key).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from concurrent import futures
from dataclasses import dataclass, field

import duckdb
from google.cloud import pubsub_v1

from segops.pubsub import PubSubUnavailable, check_topic, describe_target, topic_path
from segops.settings import Settings
from segops.warehouse import connect, transaction

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
    """Publishes one source's changes (`realtime` by the stream, `batch` by the nightly job)."""

    settings: Settings
    source: str
    publisher: pubsub_v1.PublisherClient = field(init=False)
    in_flight: dict[int, tuple[str, futures.Future]] = field(default_factory=dict)
    confirmed: list[int] = field(default_factory=list)  # accepted, not yet marked in a commit
    handed_out: int = 0  # highest change_id given to the publisher
    last_error: BaseException | None = None  # the latest refusal, kept for reporting

    def __post_init__(self) -> None:
        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.01),
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        )
        self.topic = topic_path(self.settings, self.settings.changes_topic)

    def unpublished(self, con: duckdb.DuckDBPyConnection, limit: int = BATCH) -> list[tuple]:
        """Changes not yet published nor already handed to the publisher, oldest first."""
        return con.execute(
            """
            select change_id, segment, customer_id, change, changed_at, source, attributes
            from segops.segment_membership_changes
            where source = ? and published_at is null and change_id > ?
            order by change_id limit ?
            """,
            [self.source, self.handed_out, limit],
        ).fetchall()

    def publish(self, rows: list[tuple]) -> None:
        for row in rows:
            data, attributes = change_message(row)
            self.in_flight[row[0]] = (
                row[2],
                self.publisher.publish(self.topic, data, ordering_key=row[2], **attributes),
            )
            self.handed_out = max(self.handed_out, row[0])

    def mark_accepted(self, con: duckdb.DuckDBPyConnection, wait: float = 0) -> None:
        """Mark, in the caller's transaction, what Pub/Sub accepted; `committed()` after it."""
        self.confirmed.extend(self.accepted(wait))
        if self.confirmed:
            con.execute(
                """
                update segops.segment_membership_changes
                set published_at = now() at time zone 'UTC'
                where change_id in (select unnest($ids))
                """,
                {"ids": self.confirmed},
            )

    def committed(self) -> None:
        """The marks are durable; a rolled-back transaction keeps them for the next one."""
        self.confirmed.clear()

    def accepted(self, wait: float = 0) -> list[int]:
        """Change ids Pub/Sub has accepted since the last call; failures are re-read later."""
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
            # Everything from the first failure on is read again; ordering keys resume.
            self.handed_out = min(self.handed_out, failed[0] - 1)
            for key in {done[cid][0] for cid in failed}:
                self.publisher.resume_publish(self.topic, key)
        return sorted(set(done) - set(failed))


def publish_backlog(settings: Settings, source: str, accept_timeout: float = 60.0) -> Counter:
    """Publish and mark every unpublished change of `source`; returns the count per segment.

    The warehouse is opened only to read a chunk and to mark it, so the streaming consumer keeps
    its turn while Pub/Sub accepts the chunk.
    """
    check_topic(settings, settings.changes_topic)
    feed = ChangeFeed(settings, source)
    published: Counter = Counter()
    try:
        while True:
            with connect(settings.warehouse, read_only=True) as con:
                rows = feed.unpublished(con)
            if not rows:
                return published
            feed.publish(rows)
            with connect(settings.warehouse) as con, transaction(con):
                feed.mark_accepted(con, wait=accept_timeout)
            feed.committed()
            if feed.last_error is not None or feed.in_flight:
                reason = feed.last_error or f"no answer within {accept_timeout:.0f}s"
                raise PubSubUnavailable(
                    f"{describe_target()} did not accept every change ({reason}); "
                    f"{sum(published.values())} published, the rest go out on the next run"
                )
            published.update(row[1] for row in rows)
    finally:
        feed.publisher.stop()
