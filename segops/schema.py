"""The tables every path reads and writes: raw events (with what the tracking plan found wrong
in those it let in), customers (with every change to their traits) and dead letters,
membership, its change log (the change feed's outbox), the consumer's heartbeat, and the
customers whose segments the stream owes a re-evaluation.

`raw.events` has no unique index on `event_id`: DuckDB holds an index whole in memory, so one
there would grow the consumer with every event stored. The index by customer
(`streaming/customer_events.py`) keeps event ids unique on disk instead.
"""

from __future__ import annotations

import duckdb

SCHEMA_DDL = """
create schema if not exists raw;
create schema if not exists segops;

create table if not exists raw.customers (
    customer_id varchar not null,
    email varchar,
    country varchar,
    city varchar,
    acquisition_channel varchar,
    signed_up_at timestamp not null,
    traits json
);
alter table raw.customers add column if not exists traits json;

create table if not exists raw.customer_traits (
    customer_id varchar not null,
    trait varchar not null,
    value json,
    set_at timestamp not null,
    source varchar not null,
    recorded_at timestamp not null default (now() at time zone 'UTC')
);

create table if not exists raw.events (
    event_id varchar not null,
    customer_id varchar not null,
    event_type varchar not null,
    occurred_at timestamp not null,
    properties json,
    ingested_at timestamp not null default (now() at time zone 'UTC')
);

create table if not exists raw.event_violations (
    event_id varchar not null,
    customer_id varchar not null,
    event_type varchar not null,
    occurred_at timestamp not null,
    kind varchar not null,
    detail varchar not null,
    recorded_at timestamp not null default (now() at time zone 'UTC')
);

create table if not exists raw.dead_letters (
    received_at timestamp not null default (now() at time zone 'UTC'),
    message_id varchar,
    reason varchar not null,
    payload blob,
    attributes json
);

create sequence if not exists segops.change_id_seq;

create table if not exists segops.reevaluate_queue (
    customer_id varchar not null,
    reason varchar not null,
    queued_at timestamp not null default (now() at time zone 'UTC')
);

create table if not exists segops.segment_membership (
    segment varchar not null,
    customer_id varchar not null,
    entered_at timestamp not null,
    source varchar not null,
    attributes json,
    primary key (segment, customer_id)
);

create table if not exists segops.segment_membership_changes (
    change_id bigint primary key default nextval('segops.change_id_seq'),
    segment varchar not null,
    customer_id varchar not null,
    change varchar not null check (change in ('enter', 'exit')),
    changed_at timestamp not null,
    source varchar not null check (source in ('batch', 'realtime')),
    attributes json,
    recorded_at timestamp not null default (now() at time zone 'UTC'),
    published_at timestamp
);

create table if not exists segops.consumer_heartbeat (
    consumer_id varchar primary key,
    started_at timestamp not null,
    beat_at timestamp not null,
    evaluated_at timestamp not null,
    last_batch_at timestamp,
    lag_ms double,
    batches bigint not null default 0,
    events bigint not null default 0,
    duplicates bigint not null default 0,
    dead_letters bigint not null default 0,
    failed_segments json
);
"""


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw and membership tables if missing (idempotent)."""
    con.execute(SCHEMA_DDL)
    # No index on event ids (see above), also in a warehouse that was given one.
    con.execute("drop index if exists raw.events_event_id")
