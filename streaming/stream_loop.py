"""What every streaming consumer shares: its settings, what a batch reports, and the loop that
pulls micro-batches, has them processed and acks them after they commit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from segops.clock import utc_now
from segops.events import Event
from segops.heartbeat import BatchCounts
from segops.live_connection import first_line
from segops.membership import MembershipDelta, SegmentFailed, SegmentsFailed
from segops.tracking_plan import TrackingPlan
from streaming.live_segments import LiveSegments
from streaming.source import Incoming, MessageSource
from streaming.validation import validate_all

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds between attempts to reach a store that went away: soon at first (a restart takes
# seconds), then no more often than this cap, so a long outage costs the server nothing.
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 5.0


class Stopped(Exception):
    """Asked to stop while the store was away: the batch in hand is left unacked."""


@dataclass(frozen=True)
class BatchOutcome:
    received: int
    stored: int
    duplicates: int
    dead_lettered: int
    deltas: tuple[MembershipDelta, ...]
    evaluated_at: datetime
    seconds: float
    # Where the seconds went (the last attempt): open (none while held), store, evaluate, commit.
    steps: dict[str, float] = field(default_factory=dict)


@dataclass
class ConsumerConfig:
    consumer_id: str = "segops-stream"
    batch_size: int = 1000
    batch_wait_seconds: float = 0.1
    tick_seconds: float = 1.0
    retry_failed_seconds: float = 30.0
    publish_changes: bool = True  # the change feed (outbox) to the segment-changes topic
    # The memory of the DuckDB a consumer evaluates its batches in (None: 1 GB). At DuckDB's
    # default (80 % of the machine) it keeps every table block the batches wrote, so a consumer
    # that never idles grows for as long as it runs; a batch needs tens of MB, and past the
    # limit DuckDB evicts blocks and spills to disk rather than fail.
    batch_memory_limit: str | None = "64MB"
    # Customers per chunk of a pass that evaluates segments for everyone: one chunk runs
    # between two batches (back to back while no message waits), so it is what a pass adds
    # to a batch's latency.
    backfill_chunk: int = 1000
    # Customers the time sweep hands one batch at most; the rest are queued for the batches
    # after. After an outage the sweep can find every customer of a large shop, and a batch
    # holds a lock per customer in PostgreSQL's shared lock table until it commits.
    swept_per_batch: int = 1000


class Laps:
    """Seconds between successive marks, by name: where a batch's time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name], self._last = now - self._last, now


@dataclass(frozen=True)
class Batch:
    """One micro-batch as validated at its "now", and what a consumer reports of it."""

    messages: Sequence[Incoming]
    now: datetime
    events: list[Event]
    rejected: list[tuple[Incoming, str]]
    started: float  # time.monotonic() when it was taken

    @classmethod
    def validated(cls, messages: Sequence[Incoming], now: datetime, plan: TrackingPlan
                  ) -> Batch:
        started = time.monotonic()
        events, rejected = validate_all(messages, now, plan)
        return cls(messages, now, events, rejected, started)

    def counts(self, stored: int) -> BatchCounts:
        """What the heartbeat adds for this batch, `stored` of its events being new."""
        return BatchCounts(messages=len(self.messages), stored=stored,
                           duplicates=len(self.events) - stored,
                           dead_letters=len(self.rejected), lag_ms=lag_ms(self.messages))

    def outcome(self, stored: int, deltas: Sequence[MembershipDelta], laps: Laps
                ) -> BatchOutcome:
        """The batch committed: say so, and what it did."""
        duplicates = len(self.events) - stored
        if self.messages and log.isEnabledFor(logging.DEBUG):  # `--verbose`; not every batch
            log.debug("committed batch: %d messages, %d stored, %d duplicates, %d dead letters "
                      "in %s", len(self.messages), stored, duplicates, len(self.rejected),
                      ", ".join(f"{step} {seconds * 1000:.1f} ms"
                                for step, seconds in laps.seconds.items()))
        return BatchOutcome(received=len(self.messages), stored=stored, duplicates=duplicates,
                            dead_lettered=len(self.rejected), deltas=tuple(deltas),
                            evaluated_at=self.now, seconds=time.monotonic() - self.started,
                            steps=laps.seconds)


class StreamLoop:
    """Micro-batches in, `process` each (one transaction), ack after it returns; between
    batches `maintain`. A consumer gives `session`, `start`, `process`, `maintain`,
    `busy`, `flush_changes`; one whose store is a server gives `lost` and `reopen` too,
    and outlives the server's restarts."""

    config: ConsumerConfig
    on_commit = None
    stopping: threading.Event
    segments: LiveSegments
    store = "the store"  # what the outage lines name

    def run(self, source: MessageSource, *, until_idle: float | None = None) -> None:
        """Consume until `stop()` or until idle for `until_idle` seconds."""
        with self.session():
            try:
                self.surviving(self.start)
                source.start()
                try:
                    self._loop(source, until_idle)
                finally:
                    source.stop()
                    self.flush_changes()
            except Stopped:
                log.info("stopped while %s was away; what it had not committed is delivered "
                         "again", self.store)
        log.info("consumer stopped cleanly")

    def stop(self) -> None:
        self.stopping.set()

    def busy(self) -> bool:
        """Whether `maintain` has work to go on with while no message waits."""
        return False

    def until_committed(self, attempt: Callable[[list[str], bool], T]) -> T:
        """`attempt(segments, together)` (one transaction) until it commits, with the healthy
        segments: when they failed evaluated together, again one by one to learn which; a
        segment that failed is marked failed and left out."""
        segments, together = self.segments.healthy(), True
        while True:
            try:
                return attempt(segments, together)
            except SegmentsFailed as failure:
                log.warning("%s; evaluating them one by one to find which", failure)
                together = False
            except SegmentFailed as failure:
                self.segments.mark_failed(failure)
                segments.remove(failure.segment)

    @contextmanager
    def session(self) -> Iterator[None]:
        yield

    def lost(self, error: Exception) -> str | None:
        """Why the store is gone, when `error` says it went away (its server stopped, the
        connection broke); None for any other error, which is raised as it is."""
        return None

    def reopen(self) -> None:
        """Open the session again after the store came back; raises what `lost` recognises
        while it is still away."""

    def conflicted(self, error: Exception) -> bool:
        """Whether the store undid the transaction for a conflict with another writer's (a
        deadlock, a serialization failure), which doing it again resolves."""
        return False

    def surviving(self, work: Callable[[], T]) -> T:
        """`work()`, done again from the start each time the store comes back from going away
        under it, or undid it for a conflict: nothing it did was committed, or, if it was,
        doing it again changes nothing (the keys deduplicate). Raises Stopped when asked to
        stop meanwhile."""
        while True:
            try:
                return work()
            except Exception as error:
                if self.conflicted(error):
                    log.info("%s undid a transaction (%s); doing it again", self.store,
                             first_line(error))
                    continue
                reason = self.lost(error)
                if reason is None:
                    raise
            self._outlast(reason)

    def _outlast(self, reason: str) -> None:
        """Wait for the store, trying to reopen the session with a capped backoff; one line
        when the outage starts and one when it ends, as the Pub/Sub source does."""
        log.warning("%s unreachable (%s); retrying with backoff up to %.0fs, nothing acked",
                    self.store, reason, RECONNECT_MAX_SECONDS)
        started, delay = time.monotonic(), 0.0
        while not self.stopping.wait(delay):
            try:
                self.reopen()
            except Exception as error:
                if self.lost(error) is None:
                    raise
                delay = min(max(delay * 2, RECONNECT_FIRST_SECONDS), RECONNECT_MAX_SECONDS)
                continue
            log.warning("%s is back after %.1fs out; session reopened, retrying",
                        self.store, time.monotonic() - started)
            return
        raise Stopped

    def _loop(self, source: MessageSource, until_idle: float | None) -> None:
        idle_since = last_eval = time.monotonic()
        while not self.stopping.is_set():
            messages = source.next_batch(self.config.batch_size, self.config.batch_wait_seconds)
            now_mono = time.monotonic()
            if messages:
                idle_since = now_mono
            elif until_idle is not None and now_mono - idle_since >= until_idle:
                log.info("no messages for %.0fs; exiting", until_idle)
                break
            if messages or now_mono - last_eval >= self.config.tick_seconds:
                self._commit(messages)
                last_eval = time.monotonic()
            elif self.busy():  # no message waits: go on with it at once
                self.surviving(self.maintain)

    def _commit(self, messages: Sequence) -> None:
        """Process one batch, ack it once committed, then maintain."""
        batch = [Incoming.of(m) for m in messages]
        outcome = self.surviving(lambda: self.process(batch))
        if self.on_commit:
            self.on_commit(batch, outcome)
        for message in messages:
            message.ack()
        self.surviving(self.maintain)


def lag_ms(messages: Sequence[Incoming]) -> float | None:
    """Milliseconds from the oldest publish time of the batch to now."""
    published = [m.publish_time for m in messages if m.publish_time]
    if not published:
        return None
    return (utc_now() - min(published)).total_seconds() * 1000
