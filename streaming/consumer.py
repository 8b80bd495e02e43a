"""The streaming consumer: micro-batches in, one transaction per batch, ack after commit.

Each batch: validate every message; store good events (deduplicated on event_id), the traits
that identify events set, and bad messages as dead letters with their reason; re-evaluate the
real-time segments for the customers the batch touched, for those a load of customers changed,
and for those whose membership the passing time can change; write membership; update the
heartbeat. All of that commits together, and only then are the messages acked, so a crash at
any point redelivers rather than loses, and redelivery stores nothing twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import duckdb

from segops.change_feed import ChangeFeed
from segops.clock import utc_now
from segops.customers import take_reevaluation_queue
from segops.heartbeat import BatchCounts, record_beat, watermark
from segops.membership import SegmentFailed
from segops.schema import ensure_schema
from segops.settings import Settings
from segops.warehouse import HeldConnection, transaction
from streaming.customer_events import CustomerEvents
from streaming.live_plan import LivePlan
from streaming.live_segments import LiveSegments
from streaming.source import Incoming
from streaming.storage import (
    store_dead_letters,
    store_events,
    store_traits,
    store_violations,
)
from streaming.stream_loop import Batch, BatchOutcome, ConsumerConfig, Laps, StreamLoop

log = logging.getLogger(__name__)


class Consumer(StreamLoop):
    def __init__(
        self,
        settings: Settings,
        config: ConsumerConfig | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_commit: Callable[[Sequence[Incoming], BatchOutcome], None] | None = None,
    ):
        self.settings = settings
        self.config = config or ConsumerConfig()
        self.clock = clock
        self.on_commit = on_commit
        self.watermark: datetime | None = None
        self.stopping = threading.Event()
        self._wait_reported = 0.0
        self.by_customer = CustomerEvents(settings.warehouse)
        self.warehouse = HeldConnection(settings.warehouse,
                                        timeout=self.config.lock_timeout_seconds,
                                        on_wait=self._report_wait, on_open=self._opened)
        self.segments = LiveSegments(settings,
                                     retry_failed_seconds=self.config.retry_failed_seconds)
        self.tracking_plan = LivePlan(settings.tracking_plan)
        self.feed = ChangeFeed(settings, "realtime") if self.config.publish_changes else None

    # -- setup ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create tables if needed and evaluate every real-time segment over all customers."""
        with self._connect() as con:  # creates the tables if needed (`_opened`)
            self.watermark = watermark(con, self.config.consumer_id)
        self._evaluate_everyone(list(self.segments.evaluator.queries))

    def _evaluate_everyone(self, segments: list[str]) -> None:
        healthy = [s for s in segments if s not in self.segments.evaluator.refused]
        while healthy:
            now = self.clock()
            try:
                with (self._connect() as con, _whole_machine(con, self.config),
                      transaction(con)):
                    deltas = self.segments.evaluator.evaluate(
                        con, touched=[], now=now, since=None, segments=healthy, everyone=True
                    )
                    self._beat(con, now, BatchCounts())
            except SegmentFailed as failure:
                self.segments.mark_failed(failure)
                healthy.remove(failure.segment)
                continue
            self.segments.evaluated_everyone(healthy, now)
            for delta in deltas:
                self.segments.recovered(delta.segment)
                log.info("%s: %d members (%d in, %d out)", delta.segment, delta.size,
                         delta.enters, delta.exits)
            self.watermark = now
            return

    # -- the loop --------------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[None]:
        """The warehouse stays open while messages keep coming and is given up on an idle round
        (`idle`) and whenever another process waits for it."""
        with self.warehouse.held():
            yield
        self.by_customer.close()

    def idle(self) -> None:
        self.warehouse.release()

    def flush_changes(self) -> None:
        """Wait for the changes in flight and mark those Pub/Sub accepted."""
        if self.feed and (self.feed.in_flight or self.feed.confirmed):
            with self._connect() as con, transaction(con):
                self.feed.mark_accepted(con, wait=10)
            self.feed.committed()

    def maintain(self) -> None:
        """Between batches: pick up a changed tracking plan and manifest, retry failed
        segments now and then, and evaluate for everyone the segments whose `reevaluate_every`
        is due."""
        self.tracking_plan.reload_if_changed()
        for segments in (self.segments.reload_if_changed(), self.segments.due_for_retry(),
                         self.segments.due_for_reevaluation(self.clock())):
            if segments:
                self._evaluate_everyone(segments)

    # -- one micro-batch ---------------------------------------------------------------------

    def process(self, messages: Sequence[Incoming]) -> BatchOutcome:
        """Store, evaluate and commit one micro-batch; the caller acks after this returns."""
        batch = Batch.validated(messages, self.clock(), self.tracking_plan.plan)
        now = batch.now
        unique = list({e.event_id: e for e in reversed(batch.events)}.values())

        def attempt(segments: list[str], together: bool):
            laps = Laps()
            # The warehouse commits first, then the index by customer: never ahead of it.
            with self._connect() as con, self.by_customer.transaction(), transaction(con):
                laps.mark("open")
                if self.feed:
                    self.feed.mark_accepted(con)
                stored = self.by_customer.add(unique, now)  # what is not a redelivery
                store_events(con, stored, now)
                store_violations(con, stored)
                store_traits(con, stored)
                store_dead_letters(con, batch.rejected)
                owed = take_reevaluation_queue(con)  # customers a load changed
                laps.mark("store")
                deltas = self.segments.evaluator.evaluate(
                    con,
                    touched={e.customer_id for e in unique} | owed,
                    now=now,
                    since=self.watermark,
                    segments=segments,
                    together=together,
                    by_customer=self.by_customer,
                )
                self._beat(con, now, batch.counts(len(stored)))
                changes = self.feed.unpublished(con) if self.feed else []
                laps.mark("evaluate")
            laps.mark("commit")
            return len(stored), deltas, changes, laps

        stored, deltas, changes, laps = self.until_committed(attempt)
        self.watermark = now
        if self.feed:
            self.feed.committed()
            self.feed.publish(changes)
        return batch.outcome(stored, deltas, laps)

    def _connect(self):
        return self.warehouse.use()

    def _opened(self, con: duckdb.DuckDBPyConnection) -> None:
        """On each opening of the warehouse: tables exist, the index by customer agrees."""
        ensure_schema(con)
        self.by_customer.sync(con)
        _for_batches(con, self.config)

    def _report_wait(self, waited: float) -> None:
        """Say so after a second, then every ten: a long wait is visible, not a flood."""
        if waited < self._wait_reported:
            self._wait_reported = 0.0  # a new wait
        if waited - self._wait_reported >= (10 if self._wait_reported else 1):
            self._wait_reported = waited
            log.warning("warehouse locked by another process; waited %.0fs, retrying with "
                        "backoff, nothing acked", waited)

    def _beat(self, con: duckdb.DuckDBPyConnection, now: datetime, counts: BatchCounts) -> None:
        record_beat(con, self.config.consumer_id, evaluated_at=now, wall=utc_now(),
                    counts=counts, failed_segments=self.segments.failed)


def _for_batches(con: duckdb.DuckDBPyConnection, config: ConsumerConfig) -> None:
    """DuckDB's threads and memory limit for micro-batches."""
    con.execute(f"set threads = {config.batch_threads:d}")
    if config.batch_memory_limit is None:
        con.execute("reset memory_limit")
    else:
        con.execute("set memory_limit = $limit", {"limit": config.batch_memory_limit})


@contextmanager
def _whole_machine(con: duckdb.DuckDBPyConnection, config: ConsumerConfig) -> Iterator[None]:
    """DuckDB's default threads (one per core) and memory for the block, then back to those
    for micro-batches."""
    con.execute("reset threads")
    con.execute("reset memory_limit")
    try:
        yield
    finally:
        _for_batches(con, config)
