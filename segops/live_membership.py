"""Membership in PostgreSQL: the customers' locks, the one writer, and the nightly's side.

Concurrent writers serialize per customer through PostgreSQL itself: a transaction first takes
an advisory lock per customer it will decide, and membership for a customer is only ever decided
while its lock is held. Those it must decide it waits for, in the order of the locks' keys, so
two that share customers run one after the other and never deadlock; those it may leave to a
later batch it only tries for (a stream batch queues a customer another batch holds for
re-evaluation, rather than wait for that whole batch). The locks go with the commit (or with
the rollback of a consumer that died).

Real-time segments are the stream's; the nightly applies its own segments (evaluated over the
warehouse's models) and measures the real-time ones' parity, leaving their rows alone.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

import duckdb
import psycopg
from pyarrow import csv

from segops.catalog import Segment
from segops.clock import set_session_now
from segops.heartbeat import REPLAY_CONSUMER_ID, Heartbeat
from segops.live_heartbeat import heartbeats
from segops.membership import members_query, stage_found
from segops.parity import SAMPLE, Drift

# a customer's lock: PostgreSQL's advisory lock keyed by a hash of the customer id
_KEY = "hashtextextended(customer_id, 0)"
COPY_ROWS = 100_000
# the memory a nightly's join of a whole segment with what is held may take before it spills
WHOLE_SEGMENT_WORK_MEM = "256MB"


def evaluate_batch(con: duckdb.DuckDBPyConnection, segment: Segment, at: datetime) -> None:
    """The segment's model at `at` into `_found` (segment, customer_id, attributes), checked
    against the segment contract (SegmentContractError)."""
    set_session_now(con, at)
    stage_found(con, {segment.name: members_query(con, segment.name, segment.relation)})


def copy_found(pg: psycopg.Connection, duck: duckdb.DuckDBPyConnection) -> None:
    """DuckDB's `_found` into `staged_found`, a temporary table of `pg`'s transaction dropped at
    its commit: a whole segment, up to millions of members, as CSV through PostgreSQL's COPY,
    with no Python object per member.

    The rest of the transaction joins it with what is held: hundreds of thousands of rows on
    both sides, where a nested loop (which a planner misled by statistics older than the last
    burst picks) does not finish, and a hash join in PostgreSQL's default 4 MB spills to disk."""
    pg.execute("set local enable_nestloop = off")
    pg.execute(f"set local work_mem = '{WHOLE_SEGMENT_WORK_MEM}'")
    pg.execute("create temp table staged_found (segment text, customer_id text, attributes jsonb) "
               "on commit drop")
    batches = duck.execute("select segment, customer_id, attributes::varchar as attributes "
                           "from _found").to_arrow_reader(COPY_ROWS)
    no_header = csv.WriteOptions(include_header=False)
    with pg.cursor().copy("copy staged_found from stdin (format csv)") as copy:
        for batch in batches:
            text = io.BytesIO()
            csv.write_csv(batch, text, write_options=no_header)
            copy.write(text.getbuffer())


def stream_state(pg: psycopg.Connection) -> tuple[Heartbeat | None, datetime | None]:
    """The latest beat of a live consumer, and the time the stream's sweep reached (every
    customer is evaluated up to it)."""
    beats = [beat for beat in heartbeats(pg) if beat.consumer_id != REPLAY_CONSUMER_ID]
    row = pg.execute("select at from segops.stream_state where name = 'sweep'").fetchone()
    return (beats[0] if beats else None), (row[0] if row else None)


def live_drift(pg: psycopg.Connection, duck: duckdb.DuckDBPyConnection, segment: Segment,
               at: datetime) -> Drift:
    """The stream's membership of `segment` in PostgreSQL against the batch's (`_found` of
    `duck`, evaluate_batch at `at`), compared inside PostgreSQL in one full join; customers the
    stream owes a re-evaluation are not compared."""
    with pg.transaction():
        copy_found(pg, duck)
        batch_size, missing_count, unexpected_count, missing, unexpected = pg.execute(
            """
            with stream as (
                select customer_id from segops.segment_membership where segment = %(segment)s
            ),
            joined as (
                select customer_id, batch.customer_id is not null as in_batch,
                       stream.customer_id is not null as in_stream
                from staged_found as batch full join stream using (customer_id)
            ),
            compared as (
                select * from joined
                where not exists (select from segops.reevaluate_queue as owed
                                  where owed.customer_id = joined.customer_id)
            )
            select count(*) filter (where in_batch),
                   count(*) filter (where not in_stream),
                   count(*) filter (where not in_batch),
                   array(select customer_id from compared where not in_stream
                         order by 1 limit %(sample)s),
                   array(select customer_id from compared where not in_batch
                         order by 1 limit %(sample)s)
            from compared
            """, {"segment": segment.name, "sample": SAMPLE}).fetchone()
    return Drift(segment=segment.name, evaluated_at=at, batch_size=batch_size,
                 missing=missing, unexpected=unexpected,
                 missing_count=missing_count, unexpected_count=unexpected_count)


def held_count(pg: psycopg.Connection, segment: str) -> int:
    return pg.execute("select count(*) from segops.segment_membership where segment = %s",
                      [segment]).fetchone()[0]


def lock_customers(con: psycopg.Connection, customers: Iterable[str]) -> None:
    """Wait for, then hold until commit, the lock of every customer of the batch."""
    con.execute("select pg_advisory_xact_lock(key) from (select distinct "
                f"{_KEY} as key from unnest(%s::text[]) as batch "
                "(customer_id)) as keys order by key",
                [sorted(set(customers))])


def lock_free_customers(con: psycopg.Connection, customers: set[str]) -> set[str]:
    """Take, without waiting, the lock of every one of `customers` that no other transaction
    holds, until commit; the customers locked. Call it after `lock_customers`, never before: a
    transaction then only waits while it holds locks taken in key order, so none deadlocks."""
    if not customers:
        return set()
    return {row[0] for row in con.execute(
        "select customer_id from unnest(%s::text[]) as batch (customer_id) "
        f"where pg_try_advisory_xact_lock({_KEY})", [sorted(customers)]).fetchall()}


def queue_for_reevaluation(con: psycopg.Connection, customers: Iterable[str], reason: str
                           ) -> None:
    """Ask the stream to re-evaluate `customers` (any consumer's next batch takes them), in the
    caller's transaction."""
    con.execute("insert into segops.reevaluate_queue (customer_id, reason) "
                "select distinct customer_id, %s from unnest(%s::text[]) as c (customer_id) "
                "on conflict do nothing", [reason, sorted(set(customers))])


def apply_found(con: psycopg.Connection, found: Sequence[tuple[str, str, str | None]], *,
                segments: Sequence[str], customers: Iterable[str] | None, source: str,
                changed_at: datetime) -> Counter[tuple[str, str]]:
    """Bring the customers' membership of `segments` to `found` (segment, customer_id,
    attributes as JSON text) for `customers` (None: every customer). Enters, exits and their
    changes recorded, attributes kept current. What was already so changes nothing, so a
    redelivered batch records nothing twice. Returns (segment, enter|exit) counts. The stream
    runs it under the customers' locks (`lock_customers`).

    A micro-batch's members travel as one JSON parameter of one statement, with no temporary
    table to create and drop on every batch; a whole segment is copied first (apply_batch)."""
    rows = "[" + ",".join(
        f'{{"segment":{json.dumps(segment)},"customer_id":{json.dumps(customer)},'
        f'"attributes":{attributes or "null"}}}' for segment, customer, attributes in found
    ) + "]"
    return _apply(con, "select * from jsonb_to_recordset(%(found)s::jsonb) "
                       "as f (segment text, customer_id text, attributes jsonb)",
                  {"found": rows}, segments=segments, customers=customers, source=source,
                  changed_at=changed_at)


def _apply(con: psycopg.Connection, found: str, parameters: dict, *, segments: Sequence[str],
           customers: Iterable[str] | None, source: str, changed_at: datetime
           ) -> Counter[tuple[str, str]]:
    """apply_found with the members found given as a query (`found`, with its `parameters`).

    One statement: the delta, the membership writes and the changes as data-modifying CTEs.
    The delta is one full join of what was found with what is held, a third of the time of
    an anti-join each way and a join for the attributes on a whole segment. The customers are
    joined, not compared with `= any(...)`, for the reason in ScopeEngine.load."""
    scope = "true" if customers is None else (
        "customer_id in (select unnest(%(customers)s::text[]))")
    recorded = con.execute(
        f"""
        with found as (
            select * from ({found}) as found where {scope}
        ),
        held as (
            select * from segops.segment_membership
            where segment = any(%(segments)s) and {scope}
        ),
        delta as (
            select
                customer_id,
                segment,
                case when f.customer_id is null then 'exit'
                     when h.customer_id is null then 'enter'
                     else 'update' end as change,
                case when f.customer_id is null then h.attributes else f.attributes end
                    as attributes
            from found as f full join held as h using (customer_id, segment)
            where f.customer_id is null or h.customer_id is null
                  or h.attributes is distinct from f.attributes
        ),
        exited as (
            delete from segops.segment_membership as m using delta as d
            where d.change = 'exit' and (m.customer_id, m.segment) = (d.customer_id, d.segment)
        ),
        updated as (
            update segops.segment_membership as m set attributes = d.attributes from delta as d
            where d.change = 'update' and (m.customer_id, m.segment) = (d.customer_id, d.segment)
        ),
        entered as (
            insert into segops.segment_membership
                (customer_id, segment, entered_at, source, attributes)
            select customer_id, segment, %(at)s, %(source)s, attributes from delta
            where change = 'enter'
        )
        insert into segops.segment_membership_changes
            (customer_id, segment, change, changed_at, source, attributes)
        select customer_id, segment, change, %(at)s, %(source)s, attributes from delta
        where change <> 'update' order by customer_id, segment
        returning segment, change
        """,
        {**parameters,
         "customers": None if customers is None else sorted(set(customers)),
         "segments": list(segments),
         "at": changed_at, "source": source}).fetchall()
    return Counter(recorded)


def apply_batch(pg: psycopg.Connection, duck: duckdb.DuckDBPyConnection, segment: str,
                at: datetime, *, has_readers: bool = False) -> Counter[tuple[str, str]]:
    """Bring a nightly segment's membership in PostgreSQL to its members in `_found` of `duck`
    (evaluate_batch), in one transaction. When real-time segments read it (`has_readers`), the
    customers it moved are queued for the stream to re-evaluate, in the same transaction."""
    with pg.transaction():
        copy_found(pg, duck)
        (before,) = pg.execute("select coalesce(max(change_id), 0) "
                               "from segops.segment_membership_changes").fetchone()
        changes = _apply(pg, "select * from staged_found", {}, segments=[segment],
                         customers=None, source="batch", changed_at=at)
        if has_readers:
            pg.execute("insert into segops.reevaluate_queue (customer_id, reason) "
                       "select distinct customer_id, %s from segops.segment_membership_changes "
                       "where change_id > %s and segment = %s and source = 'batch'",
                       [f"nightly:{segment}", before, segment])
        return changes
