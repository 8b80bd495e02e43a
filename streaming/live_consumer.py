"""The streaming consumer on PostgreSQL: any number of them on one subscription.

A batch is one PostgreSQL transaction, acked after it commits: take the locks of every customer
in it (sorted, so batches sharing customers take turns and never deadlock), store the events
(their key deduplicates a redelivery), the violations, the dead letters and the identify traits;
copy those customers' rows into the consumer's DuckDB and evaluate the real-time segments there,
the compiled SQL unchanged; apply enters and exits in PostgreSQL; beat. A crash anywhere rolls
back and redelivers; a redelivered event stores nothing and its customer's evaluation finds
nothing new, so every enter and exit is recorded once whichever consumer sees it.

What must happen once for the stream as a whole is done by the holder of a lease
(segops/live_leases.py): the time sweep (who crossed a time boundary since the last sweep),
publishing the change feed (so a customer's changes leave in order), and evaluating a new or
changed segment for every customer (a pass, streaming/live_backfill.py, a chunk between two
batches).

When PostgreSQL goes away (a restart, a lost connection), the consumer says so once, waits for
it with a capped backoff and opens a new session: the leases died with the old one, so it asks
for them again, and the batch it was processing, never acked, is done again from the start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import duckdb
import psycopg

from segops.change_feed import BATCH, ChangeFeed
from segops.clock import utc_now
from segops.events import IDENTIFY
from segops.heartbeat import BatchCounts
from segops.live_connection import PostgresUnreachable, connect, first_line, required
from segops.live_heartbeat import record_beat
from segops.live_leases import EVERYONE, OUTBOX, SWEEP, release, take_lease, wait_for_lease
from segops.live_membership import lock_customers, lock_free_customers, queue_for_reevaluation
from segops.live_schema import ensure_live_schema
from segops.live_scope import ScopeEngine
from segops.membership import MembershipDelta, SegmentFailed, SegmentsFailed
from segops.settings import Settings
from streaming.live_backfill import Pass, next_customers
from streaming.live_evaluation import crossed_customers, evaluate_batch, sweep_query
from streaming.live_outbox import mark_published, unpublished
from streaming.live_plan import LivePlan
from streaming.live_segments import LiveSegments
from streaming.live_storage import (
    store_dead_letters,
    store_events,
    store_violations,
    trait_changes,
)
from streaming.source import Incoming
from streaming.stream_loop import Batch, BatchOutcome, ConsumerConfig, Laps, StreamLoop

log = logging.getLogger(__name__)
# the reasons a customer is queued: another batch held it; the sweep found more than a batch
# takes
BUSY = "busy"
SWEPT = "time"


def default_consumer_id() -> str:
    """Unique per process, readable in the heartbeat table (a pod's name is its host name)."""
    return f"{socket.gethostname()}-{os.getpid()}"


class LiveConsumer(StreamLoop):
    store = "PostgreSQL"

    def __init__(
        self,
        settings: Settings,
        config: ConsumerConfig | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_commit: Callable[[Sequence[Incoming], BatchOutcome], None] | None = None,
    ):
        required(settings.postgres_dsn)  # before anything starts, a sentence if there is none
        self.settings = settings
        self.config = config or ConsumerConfig(consumer_id=default_consumer_id())
        self.clock = clock
        self.on_commit = on_commit
        self.stopping = threading.Event()
        self.pg: psycopg.Connection | None = None
        self.engine = ScopeEngine(memory_limit=self.config.batch_memory_limit or "1GB",
                                  lake=(settings.postgres_dsn, settings.lake_data_path))
        self.segments = LiveSegments(settings,
                                     retry_failed_seconds=self.config.retry_failed_seconds)
        self.tracking_plan = LivePlan(settings.tracking_plan)
        self.feed = ChangeFeed(settings) if self.config.publish_changes else None
        self.leases: set[int] = set()
        self.wanted: dict[str, bool] = {}  # to evaluate for everyone -> asked as due
        self.backfill: Pass | None = None  # the pass for everyone this consumer is running
        # the time sweep's query, translated once for each evaluator (a new manifest, a new one)
        self._sweep_query: tuple[object, str | None] = (None, None)

    # -- setup -----------------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[None]:
        self.pg = self._open()
        try:
            yield
        finally:
            self.pg.close()  # whichever session is current: `reopen` replaces it
            self.pg = None
            if self.feed is not None:
                self.feed.close()

    def _open(self) -> psycopg.Connection:
        pg = connect(self.settings.postgres_dsn, autocommit=True)
        try:
            ensure_live_schema(pg)
        except BaseException:
            pg.close()
            raise
        return pg

    def reopen(self) -> None:
        """A new session after PostgreSQL came back. The leases were the old session's locks
        and died with it, as did the lake's catalog connection in the consumer's DuckDB."""
        if self.pg is not None:
            self.pg.close()
        self.pg = self._open()
        self.leases.clear()
        if self.backfill is not None:  # its lease is gone: whoever takes it starts again
            for name, due in self.backfill.due.items():
                self._want([name], due=due)
            self.backfill = None
        self.engine.reattach()

    def lost(self, error: Exception) -> str | None:
        """Why PostgreSQL is gone, when `error` says so: a connection refused, or the driver's
        operational error or a DuckDB error (the lake's catalog is in PostgreSQL) while this
        session no longer answers either. An operational error of a server that answers (out
        of shared memory, a statement timeout) is raised: retrying would fail the same way."""
        if isinstance(error, PostgresUnreachable):
            return error.reason or str(error)
        if isinstance(error, (psycopg.OperationalError, duckdb.Error)) and not self._answers():
            return first_line(error)
        return None

    def conflicted(self, error: Exception) -> bool:
        """PostgreSQL's transaction rollback class (40): a deadlock, a serialization failure."""
        return isinstance(error, psycopg.Error) and (error.sqlstate or "").startswith("40")

    def _answers(self) -> bool:
        try:
            self.pg.execute("select 1")
        except psycopg.OperationalError:
            return False
        return True

    def _evaluate(self, segments: list[str], customers: list[str], now: datetime, *,
                  together: bool = False) -> Counter[tuple[str, str]]:
        """evaluate_batch; a segment that failed because PostgreSQL went away (its DuckDB
        reads the lake through it) is not the segment's fault: the loss is raised instead."""
        try:
            return evaluate_batch(self.pg, self.segments.evaluator, self.engine, segments,
                                  customers, now, together=together)
        except (SegmentFailed, SegmentsFailed):
            self.pg.execute("select 1")  # raises OperationalError when PostgreSQL is gone
            raise

    def start(self) -> None:
        """Ask for the segments whose definition no consumer evaluated yet to be evaluated for
        everyone, take the first chunk, and beat: the sensors see a consumer from its start,
        not from its first batch."""
        self._want(self.segments.healthy(), due=False)
        self._backfill()
        record_beat(self.pg, self.config.consumer_id, evaluated_at=self.clock(), wall=utc_now(),
                    counts=BatchCounts(), failed_segments=self.segments.failed)

    def maintain(self) -> None:
        """Between batches: pick up a changed tracking plan and manifest, retry failed
        segments now and then, ask for the segments whose `reevaluate_every` is due, take
        the next chunk of a pass for everyone, and mark what Pub/Sub accepted of the change
        feed and hand it the next changes."""
        self.tracking_plan.reload_if_changed()
        changed = self.segments.reload_if_changed()
        if changed:
            self._want(changed, due=False)
        if self.backfill is not None:  # a pass still on the old definitions leaves them
            queries = self.segments.evaluator.queries
            self.backfill.drop([name for name in self.backfill.segments
                                if name in changed or name not in queries])
        retry = self.segments.due_for_retry()
        if retry:
            self._want(retry, due=True)
        due = self.segments.due_for_reevaluation(self.clock())
        if due:
            self._want(due, due=True)
        self._backfill()
        if self.feed is not None and self.feed.answered():
            self._publish_changes()

    def backfilling(self) -> bool:
        return self.backfill is not None

    def busy(self) -> bool:
        """A pass for everyone under way, or changes in flight: marked published as soon as
        Pub/Sub takes them, and the next handed over, rather than a tick later."""
        return self.backfilling() or bool(self.feed and self.feed.in_flight)

    def catch_up(self) -> None:
        """Finish every pass asked for, chunk after chunk, waiting for another consumer's pass
        first if one runs: for replay, and for a caller that needs everyone evaluated now."""
        while self.wanted or self.backfill is not None:
            if self.backfill is None and EVERYONE not in self.leases:
                wait_for_lease(self.pg, EVERYONE)
                self.leases.add(EVERYONE)
            self._backfill()

    def _want(self, segments: list[str], *, due: bool) -> None:
        for name in segments:
            self.wanted[name] = self.wanted.get(name, False) or due

    def _backfill(self) -> None:
        """One chunk of the pass in hand, or of a new one over the segments asked for, when
        this consumer gets the EVERYONE lease; a consumer that does not asks again next time
        (the holder may die, and then its pass is to be done again)."""
        if self.backfill is None and not self._begin_pass():
            return
        backfill = self.backfill
        customers = next_customers(self.pg, backfill.segments, backfill.after,
                                   self.config.backfill_chunk)
        found: Counter[tuple[str, str]] = Counter()
        while customers and backfill.segments:
            try:
                with self.pg.transaction():
                    lock_customers(self.pg, customers)
                    self.engine.load(self.pg, customers,
                                     tables=self._tables_read(backfill.segments, []))
                    # Its own "now": a boundary passed before the chunk is seen by it, one
                    # passed after by the time sweep, which started before the pass.
                    found = self._evaluate(backfill.segments, customers, self.clock())
                break
            except SegmentFailed as failure:
                self.segments.mark_failed(failure)
                backfill.drop([failure.segment])
        if customers and backfill.segments:
            backfill.done(customers, found)
        if len(customers) < self.config.backfill_chunk or not backfill.segments:
            self._end_pass()  # that was the last chunk

    def _begin_pass(self) -> bool:
        """Start a pass over the segments asked for whose recorded definition differs (or,
        for those asked as due, whose `reevaluate_every` passed); False when there is none, or
        another consumer holds the lease."""
        if not self.wanted or not self._holds(EVERYONE):
            return False
        now = self.clock()
        queries = self.segments.evaluator.queries
        wanted = {name: due for name, due in self.wanted.items() if name in queries}
        self.wanted = {}
        recorded = {name: (definition, at) for name, definition, at in self.pg.execute(
            "select segment, definition, evaluated_at from segops.realtime_segments "
            "where segment = any(%s)", [list(wanted)]).fetchall()}
        todo = {name: due for name, due in wanted.items() if name not in recorded
                or recorded[name][0] != _definition(queries[name].sql)
                or (due and _is_due(queries[name].reevaluate_every, recorded[name][1], now))}
        self.pg.execute("insert into segops.stream_state (name, at) values ('sweep', %s) "
                        "on conflict do nothing", [now])
        self.segments.evaluated_everyone(list(wanted), now)
        if not todo:
            self._release(EVERYONE)
            return False
        for name in todo:
            self.segments.recovered(name)  # batches evaluate it again from now on
        self.backfill = Pass(todo, now)
        log.info("evaluating %s for every customer, %d at a time between batches",
                 ", ".join(todo), self.config.backfill_chunk)
        return True

    def _end_pass(self) -> None:
        """Record the segments the pass evaluated for everyone, drop the record of those it
        left (failed, or changed since), and let the lease go."""
        backfill, self.backfill = self.backfill, None
        evaluated = backfill.segments
        with self.pg.transaction():
            self._forget(sorted(backfill.asked - set(evaluated)))
            for name in evaluated:
                self.pg.execute(
                    "insert into segops.realtime_segments (segment, definition, evaluated_at) "
                    "values (%s, %s, %s) on conflict (segment) do update set "
                    "definition = excluded.definition, evaluated_at = excluded.evaluated_at",
                    [name, _definition(self.segments.evaluator.queries[name].sql),
                     backfill.started_at])
        self._release(EVERYONE)
        for name in evaluated:
            log.info("%s evaluated for %d customers: %d changes", name, backfill.customers,
                     backfill.changes[name])

    def _forget(self, failed: Iterable[str]) -> None:
        """Drop the record that these segments were evaluated for everyone: they skipped some
        customers, so once they work again (a retry, whichever consumer gets there first) they
        are evaluated for everyone, in the same transaction as the skip."""
        if failed:
            self.pg.execute("delete from segops.realtime_segments where segment = any(%s)",
                            [list(failed)])

    # -- one micro-batch ---------------------------------------------------------------------

    def process(self, messages: Sequence[Incoming]) -> BatchOutcome:
        """Store, evaluate and commit one micro-batch; the caller acks after this returns."""
        batch = Batch.validated(messages, self.clock(), self.tracking_plan.plan)
        now = batch.now
        unique = list({(e.customer_id, e.event_id): e for e in reversed(batch.events)}.values())
        touched = {e.customer_id for e in unique}
        identified = {e.customer_id for e in unique if e.event_type == IDENTIFY}
        sweeping = self._holds(SWEEP)

        def attempt(segments: list[str], together: bool):
            laps = Laps()
            with self.pg.transaction():
                owed = _take_queue(self.pg)  # before the sweep queues what it leaves over
                swept = self._sweep(now) if sweeping else set()
                # A customer another batch holds is left to it and queued for the next: this
                # batch stores its events but waits only for the customers whose traits it
                # sets (their profile is decided under the lock).
                wanted = touched | owed | swept
                if identified:
                    lock_customers(self.pg, identified)
                locked = identified | lock_free_customers(self.pg, wanted - identified)
                if busy := wanted - locked:
                    queue_for_reevaluation(self.pg, busy, BUSY)
                scope = sorted(locked)
                laps.mark("open")
                new_ids = store_events(self.pg, unique, now)
                stored = [e for e in unique if e.event_id in new_ids]
                store_violations(self.pg, stored)
                store_dead_letters(self.pg, batch.rejected)
                traits = trait_changes(stored)
                self.engine.load(self.pg, scope, tables=self._tables_read(segments, traits))
                self.engine.apply_traits(self.pg, traits)
                laps.mark("store")
                found = self._evaluate(segments, scope, now, together=together)
                self._forget(self.segments.failed)
                record_beat(self.pg, self.config.consumer_id, evaluated_at=now, wall=utc_now(),
                            counts=batch.counts(len(stored)),
                            failed_segments=self.segments.failed)
                laps.mark("evaluate")
            laps.mark("commit")
            deltas = [MembershipDelta(segment, found[(segment, "enter")],
                                      found[(segment, "exit")]) for segment in segments]
            return len(stored), deltas, laps

        stored, deltas, laps = self.until_committed(attempt)
        self._publish_changes()
        return batch.outcome(stored, deltas, laps)

    def _tables_read(self, segments: list[str], traits: list) -> set[str]:
        """The raw tables a batch copies: those `segments` read, and the profiles and their
        history when the batch sets traits."""
        queries = self.segments.evaluator.queries
        read = {relation.replace('"', "") for name in segments
                for relation in queries[name].sources.values()}
        return read | ({"raw.customers", "raw.customer_traits"} if traits else set())

    def _sweep(self, now: datetime) -> set[str]:
        """The customers time alone may have moved since the last sweep (whoever ran it), and
        the sweep moved on to `now`; in the batch's transaction, so a rollback sweeps again.
        Past `swept_per_batch` customers, the rest are queued for the next batches."""
        row = self.pg.execute("select at from segops.stream_state where name = 'sweep' "
                              "for update").fetchone()
        if row is None or row[0] >= now:
            return set()
        self.pg.execute("update segops.stream_state set at = %s where name = 'sweep'", [now])
        if self._sweep_query[0] is not self.segments.evaluator:
            self._sweep_query = (self.segments.evaluator,
                                 sweep_query(self.pg, self.segments.evaluator))
        crossed = sorted(crossed_customers(self.pg, self._sweep_query[1], row[0], now))
        limit = self.config.swept_per_batch
        if len(crossed) > limit:
            queue_for_reevaluation(self.pg, crossed[limit:], SWEPT)
        return set(crossed[:limit])

    def _holds(self, lease: int) -> bool:
        """Whether this consumer holds `lease`, asking for it when it does not."""
        if lease not in self.leases and take_lease(self.pg, lease):
            log.info("took the %s lease",
                     {SWEEP: "sweep", OUTBOX: "outbox", EVERYONE: "everyone"}[lease])
            self.leases.add(lease)
        return lease in self.leases

    def _release(self, lease: int) -> None:
        release(self.pg, lease)
        self.leases.discard(lease)

    # -- the change feed -------------------------------------------------------------------

    def _publish_changes(self, wait: float = 0) -> None:
        """Mark what Pub/Sub accepted and hand it the next changes, when holding the outbox,
        never more than BATCH in flight: when Pub/Sub takes them slower than they come (a
        nightly's first enters, an outage), the rest waits in the outbox, not in the client."""
        if self.feed is None or not self._holds(OUTBOX):
            return
        accepted = self.feed.accepted(wait)
        if accepted:
            mark_published(self.pg, accepted, utc_now())
        room = BATCH - len(self.feed.in_flight)
        if not wait and room > 0 and not self.feed.halted:
            self.feed.publish(unpublished(self.pg, list(self.feed.in_flight), room))

    def flush_changes(self) -> None:
        """Wait for the changes in flight and mark those Pub/Sub accepted; when PostgreSQL is
        away, leave them unmarked, for the outbox's next holder to publish again."""
        if self.pg is None or self.pg.closed or not (self.feed and self.feed.in_flight):
            return
        try:
            self._publish_changes(wait=10)
        except psycopg.OperationalError as error:
            log.warning("PostgreSQL unreachable while stopping (%s); the changes in flight "
                        "are published again by the outbox's next holder", first_line(error))


def _take_queue(con: psycopg.Connection) -> set[str]:
    """Customers a load asked the stream to re-evaluate; each taken by one consumer."""
    return {row[0] for row in con.execute(
        "delete from segops.reevaluate_queue where ctid in (select ctid from "
        "segops.reevaluate_queue for update skip locked limit 1000) returning customer_id"
    ).fetchall()}


def _definition(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def _is_due(every, evaluated_at: datetime, now: datetime) -> bool:
    return every is not None and now - evaluated_at >= every
