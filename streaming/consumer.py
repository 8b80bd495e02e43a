"""The streaming consumer: micro-batches in, one transaction per batch, ack after commit.

Each batch: validate every message; store good events (deduplicated on event_id) and bad ones
as dead letters with their reason; re-evaluate the real-time segments for the customers the
batch touched and for those whose membership the passing time can change; write membership;
update the heartbeat. All of that commits together, and only then are the messages acked, so
a crash at any point redelivers rather than loses, and redelivery stores nothing twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pyarrow as pa

from segops.catalog import Catalog
from segops.change_feed import ChangeFeed
from segops.clock import utc_now
from segops.dbt import DbtError, run_dbt
from segops.errors import SegOpsError
from segops.events import Event
from segops.membership import MembershipDelta, SegmentFailed, SegmentsFailed
from segops.schema import ensure_schema
from segops.settings import Settings
from segops.warehouse import HeldConnection, transaction
from streaming.customer_events import CustomerEvents
from streaming.evaluator import RealtimeEvaluator
from streaming.validation import Rejected, validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """One message as the consumer needs it, whatever delivered it (Pub/Sub, replay, tests)."""

    data: bytes
    message_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    publish_time: datetime | None = None


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
    lock_timeout_seconds: float = 3600.0
    publish_changes: bool = True  # the change feed (outbox) to the segment-changes topic
    # DuckDB's threads for micro-batches. Their statements are small: a second worker mostly
    # waits for a core the Pub/Sub client (and, locally, the emulator) is using. Evaluating
    # everyone, one large query, gets every core.
    batch_threads: int = 1
    # DuckDB's memory for micro-batches. At DuckDB's default (80 % of the machine) it keeps
    # every table block the batches wrote, so a consumer that never idles grows for as long as
    # it runs; a batch needs tens of MB, and past the limit DuckDB evicts blocks and spills to
    # disk rather than fail. Evaluating everyone gets DuckDB's default, as do batches with None.
    batch_memory_limit: str | None = "64MB"


class Laps:
    """Seconds between successive marks, by name: where a batch's time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name], self._last = now - self._last, now


class Consumer:
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
        self._manifest_version: tuple[int, int] | None = None
        self._last_failed_retry = time.monotonic()
        self.stopping = threading.Event()
        self._wait_reported = 0.0
        self.by_customer = CustomerEvents(settings.warehouse)
        self.warehouse = HeldConnection(settings.warehouse,
                                        timeout=self.config.lock_timeout_seconds,
                                        on_wait=self._report_wait, on_open=self._opened)
        self.evaluator = self._load_evaluator()
        self.failed: dict[str, str] = dict(self.evaluator.refused)
        self.feed = ChangeFeed(settings, "realtime") if self.config.publish_changes else None

    # -- setup ---------------------------------------------------------------------------

    def _load_evaluator(self) -> RealtimeEvaluator:
        """Read the real-time segments from the manifest, compiling them first if needed."""
        catalog = self._read_manifest()
        if any(s.compiled_sql is None for s in catalog.segments.values() if s.is_realtime):
            log.info("compiling the real-time segments (manifest has no compiled SQL yet)")
            # The in-memory target: dbt-duckdb keeps its connection open for the life of the
            # process, which would hold the warehouse's lock against every other process.
            try:
                run_dbt(self.settings, ["compile", "--select", "+path:models/segments"],
                        extra=["--target", "compile"])
            except DbtError:
                # dbt rewrites the manifest as its compile fails: that version has been tried.
                self._manifest_version = _file_version(self.settings.manifest_path)
                raise
            catalog = self._read_manifest()
        return RealtimeEvaluator.from_catalog(catalog)

    def _read_manifest(self) -> Catalog:
        """The catalog, noting which version of the file it came from (looked at first, so a
        rewrite that lands while it is read shows as a change next time)."""
        self._manifest_version = _file_version(self.settings.manifest_path)
        return Catalog.load(self.settings.manifest_path)

    def start(self) -> None:
        """Create tables if needed and evaluate every real-time segment over all customers."""
        with self._connect() as con:  # creates the tables if needed (`_opened`)
            row = con.execute(
                "select evaluated_at from segops.consumer_heartbeat where consumer_id = ?",
                [self.config.consumer_id],
            ).fetchone()
        self.watermark = row[0] if row else None
        self._evaluate_everyone(list(self.evaluator.queries))

    def _evaluate_everyone(self, segments: list[str]) -> None:
        healthy = [s for s in segments if s not in self.evaluator.refused]
        while healthy:
            now = self.clock()
            try:
                with (self._connect() as con, _whole_machine(con, self.config),
                      transaction(con)):
                    deltas = self.evaluator.evaluate(
                        con, touched=[], now=now, since=None, segments=healthy, everyone=True
                    )
                    self._beat(con, now, [], 0, 0, 0)
            except SegmentFailed as failure:
                self._mark_failed(failure)
                healthy.remove(failure.segment)
                continue
            for delta in deltas:
                self.failed.pop(delta.segment, None)
                log.info("%s: %d members (%d in, %d out)", delta.segment, delta.size,
                         delta.enters, delta.exits)
            self.watermark = now
            return

    # -- the loop --------------------------------------------------------------------------

    def run(self, source, *, until_idle: float | None = None) -> None:
        """Consume until `stop()` or until idle for `until_idle` seconds.

        The warehouse stays open while messages keep coming and is given up on an idle round
        and whenever another process waits for it.
        """
        with self.warehouse.held():
            self.start()
            source.start()
            try:
                self._loop(source, until_idle)
            finally:
                source.stop()
                self.flush_changes()
        self.by_customer.close()
        log.info("consumer stopped cleanly")

    def _loop(self, source, until_idle: float | None) -> None:
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
                batch = [_incoming(m) for m in messages]
                outcome = self.process(batch)
                if self.on_commit:
                    self.on_commit(batch, outcome)
                for message in messages:
                    message.ack()
                last_eval = time.monotonic()
                self.maintain()
            if not messages:
                self.warehouse.release()

    def flush_changes(self) -> None:
        """Wait for the changes in flight and mark those Pub/Sub accepted."""
        if self.feed and (self.feed.in_flight or self.feed.confirmed):
            with self._connect() as con, transaction(con):
                self.feed.mark_accepted(con, wait=10)
            self.feed.committed()

    def stop(self) -> None:
        self.stopping.set()

    def maintain(self) -> None:
        """Pick up a changed manifest and retry failed segments now and then."""
        if _file_version(self.settings.manifest_path) != self._manifest_version:
            self._reload()
        retryable = [s for s in self.failed if s in self.evaluator.queries]
        if retryable and time.monotonic() - self._last_failed_retry >= (
            self.config.retry_failed_seconds
        ):
            self._last_failed_retry = time.monotonic()
            self._evaluate_everyone(retryable)

    def _reload(self) -> None:
        """Swap in the segments of a changed manifest. One that cannot be read or compiled (a
        dbt run is writing it, a deploy broke a model) leaves the running segments in place
        until the file changes again: a bad deploy must not stop the stream."""
        previous = self.evaluator.queries
        try:
            self.evaluator = self._load_evaluator()
        except SegOpsError as problem:
            log.warning("%s; the segments stay as they were until the manifest changes again",
                        problem)
            return
        self.failed = dict(self.evaluator.refused)
        changed = [
            name for name, query in self.evaluator.queries.items() if previous.get(name) != query
        ]
        log.info("manifest changed; re-evaluating %s", ", ".join(changed) or "nothing")
        self._evaluate_everyone(changed)

    # -- one micro-batch ---------------------------------------------------------------------

    def process(self, messages: Sequence[Incoming]) -> BatchOutcome:
        """Store, evaluate and commit one micro-batch; the caller acks after this returns."""
        started = time.monotonic()
        now = self.clock()
        events, rejected = _validate_all(messages, now)
        unique = list({e.event_id: e for e in reversed(events)}.values())
        segments = [s for s in self.evaluator.queries if s not in self.failed]
        together = True
        while True:
            laps = Laps()
            try:
                # The warehouse commits first, then the index by customer: never ahead of it.
                with (self._connect() as con, self.by_customer.transaction(),
                      transaction(con)):
                    laps.mark("open")
                    if self.feed:
                        self.feed.mark_accepted(con)
                    stored = self.by_customer.add(unique, now)  # what is not a redelivery
                    _store_events(con, stored, now)
                    _store_dead_letters(con, rejected)
                    laps.mark("store")
                    deltas = self.evaluator.evaluate(
                        con,
                        touched={e.customer_id for e in unique},
                        now=now,
                        since=self.watermark,
                        segments=segments,
                        together=together,
                        by_customer=self.by_customer,
                    )
                    lag_ms = _lag_ms(messages)
                    self._beat(con, now, messages, len(stored), len(events) - len(stored),
                               len(rejected), lag_ms)
                    changes = self.feed.unpublished(con) if self.feed else []
                    laps.mark("evaluate")
                laps.mark("commit")
                break
            except SegmentsFailed as failure:
                log.warning("%s; evaluating them one by one to find which", failure)
                together = False
            except SegmentFailed as failure:
                self._mark_failed(failure)
                segments.remove(failure.segment)
        self.watermark = now
        if self.feed:
            self.feed.committed()
            self.feed.publish(changes)
        if messages:
            log.debug("committed batch: %d messages, %d stored, %d duplicates, %d dead letters",
                      len(messages), len(stored), len(events) - len(stored), len(rejected))
        return BatchOutcome(
            received=len(messages),
            stored=len(stored),
            duplicates=len(events) - len(stored),
            dead_lettered=len(rejected),
            deltas=tuple(deltas),
            evaluated_at=now,
            seconds=time.monotonic() - started,
            steps=laps.seconds,
        )

    def _mark_failed(self, failure: SegmentFailed) -> None:
        log.error("%s; it is skipped until fixed, the other segments go on", failure)
        self.failed[failure.segment] = str(failure.error)

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

    def _beat(
        self,
        con: duckdb.DuckDBPyConnection,
        now: datetime,
        messages: Sequence[Incoming],
        stored: int,
        duplicates: int,
        dead_letters: int,
        lag_ms: float | None = None,
    ) -> None:
        values = {
            "id": self.config.consumer_id,
            "now": now,
            "wall": utc_now(),
            "last_batch": utc_now() if messages else None,
            "lag": lag_ms,
            "batches": 1 if messages else 0,
            "stored": stored,
            "dups": duplicates,
            "dead": dead_letters,
            "failed": json.dumps(self.failed),
        }
        # An update, not an upsert: the row exists after the first beat, and an update costs
        # less than half as much on every batch.
        updated = con.execute(
            """
            update segops.consumer_heartbeat set
                beat_at = $wall,
                evaluated_at = $now,
                last_batch_at = coalesce($last_batch, last_batch_at),
                lag_ms = coalesce($lag, lag_ms),
                batches = batches + $batches,
                events = events + $stored,
                duplicates = duplicates + $dups,
                dead_letters = dead_letters + $dead,
                failed_segments = $failed
            where consumer_id = $id
            """,
            values,
        ).fetchone()[0]
        if not updated:
            con.execute(
                """
                insert into segops.consumer_heartbeat (consumer_id, started_at, beat_at,
                    evaluated_at, last_batch_at, lag_ms, batches, events, duplicates,
                    dead_letters, failed_segments)
                values ($id, $now, $wall, $now, $last_batch, $lag, $batches, $stored, $dups,
                    $dead, $failed)
                """,
                values,
            )


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


def _incoming(message) -> Incoming:
    publish_time = message.publish_time
    return Incoming(
        data=message.data,
        message_id=message.message_id,
        attributes=dict(message.attributes),
        publish_time=publish_time.replace(tzinfo=None) if publish_time else None,
    )


def _validate_all(
    messages: Sequence[Incoming], now: datetime
) -> tuple[list[Event], list[tuple[Incoming, str]]]:
    events, rejected = [], []
    for message in messages:
        result = validate(message.data, now)
        if isinstance(result, Rejected):
            rejected.append((message, result.reason))
        else:
            events.append(result)
    return events, rejected


def _store_events(con: duckdb.DuckDBPyConnection, events: list[Event], now: datetime) -> None:
    """Append the events, in one columnar insert."""
    if not events:
        return
    batch = pa.table(
        {
            "event_id": [e.event_id for e in events],
            "customer_id": [e.customer_id for e in events],
            "event_type": [e.event_type for e in events],
            "occurred_at": pa.array([e.occurred_at for e in events], pa.timestamp("us")),
            "properties": [e.properties for e in events],
        }
    )
    con.register("_batch", batch)
    try:
        con.execute(
            """
            insert into raw.events
                (event_id, customer_id, event_type, occurred_at, properties, ingested_at)
            select event_id, customer_id, event_type, occurred_at, properties::json, $now
            from _batch
            """,
            {"now": now},
        )
    finally:
        con.unregister("_batch")


def _store_dead_letters(
    con: duckdb.DuckDBPyConnection, rejected: list[tuple[Incoming, str]]
) -> None:
    """Store each bad message once, even when it is delivered (or replayed) again."""
    if not rejected:
        return
    batch = pa.table(
        {
            "message_id": [m.message_id for m, _ in rejected],
            "reason": [reason for _, reason in rejected],
            "payload": pa.array([m.data for m, _ in rejected], pa.binary()),
            "attributes": [json.dumps(m.attributes) for m, _ in rejected],
        }
    )
    con.register("_dead", batch)
    try:
        con.execute(
            """
            insert into raw.dead_letters (message_id, reason, payload, attributes)
            select message_id, reason, payload, attributes::json from _dead
            where message_id is null or message_id not in (
                select message_id from raw.dead_letters where message_id is not null)
            """
        )
    finally:
        con.unregister("_dead")


def _lag_ms(messages: Sequence[Incoming]) -> float | None:
    published = [m.publish_time for m in messages if m.publish_time]
    if not published:
        return None
    return (utc_now() - min(published)).total_seconds() * 1000


def _file_version(path) -> tuple[int, int] | None:
    """Modification time and size: a rewrite changes one or the other, even within a tick."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_size
