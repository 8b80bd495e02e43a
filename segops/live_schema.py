"""The live tables in PostgreSQL: what many processes change row by row and read at any moment.

Every key leads with `customer_id`, so one customer's rows are one index range and the tables
could be distributed by customer (Citus). `raw.events`' key is also the deduplication: a
redelivered event inserts nothing. The outbox is the change log's unpublished rows, taken with
`for update skip locked` so several publishers never send one change twice.
"""

from __future__ import annotations

import hashlib

import psycopg

LIVE_DDL = """
create schema if not exists raw;
create schema if not exists segops;

create table if not exists raw.events (
    customer_id text not null,
    event_id text not null,
    event_type text not null,
    occurred_at timestamp not null,
    properties jsonb,
    ingested_at timestamp not null default (now() at time zone 'UTC'),
    -- the inserting transaction's id: the flush to the lake copies exactly the transactions
    -- that have ended (see segops/live_import.py)
    ingested_xid bigint not null default (pg_current_xact_id()::text::bigint),
    primary key (customer_id, event_id)
);
-- a batch reads its customers' events by the key, which leads with the customer
drop index if exists raw.events_by_time;
-- the time sweeps ask which customers' events a boundary passed, across customers; the
-- tracking-plan check counts the last day's events per type from this index alone
create index if not exists events_by_occurrence_with_type on raw.events (occurred_at)
    include (event_type);
drop index if exists raw.events_by_occurrence;
-- the flush to the lake and preview's live tail read the transactions since the last flush
create index if not exists events_by_transaction on raw.events (ingested_xid);

create table if not exists raw.customers (
    customer_id text primary key,
    email text,
    country text,
    city text,
    acquisition_channel text,
    signed_up_at timestamp not null,
    traits jsonb,
    -- the transaction that last wrote the profile: the nightly copies to the lake only the
    -- profiles written since its last copy (see segops/live_import.py)
    changed_xid bigint not null default (pg_current_xact_id()::text::bigint)
);
alter table raw.customers add column if not exists
    changed_xid bigint not null default (pg_current_xact_id()::text::bigint);
create index if not exists customers_by_transaction on raw.customers (changed_xid);

create table if not exists raw.customer_traits (
    customer_id text not null,
    trait text not null,
    set_at timestamp not null,
    value jsonb,
    source text not null,
    recorded_at timestamp not null default (now() at time zone 'UTC'),
    recorded_xid bigint not null default (pg_current_xact_id()::text::bigint),
    primary key (customer_id, trait, set_at, source)
);
alter table raw.customer_traits add column if not exists
    recorded_xid bigint not null default (pg_current_xact_id()::text::bigint);
create index if not exists traits_by_transaction on raw.customer_traits (recorded_xid);

-- Whatever writes a profile (the stream, a load, an administrator's SQL), its transaction is
-- recorded: an update sets `changed_xid`; a deleted profile, or trait history changed other
-- than by adding to it, leaves its customer here, for the copy to replace theirs whole.
create table if not exists raw.profiles_rewritten (
    customer_id text not null,
    rewritten_xid bigint not null default (pg_current_xact_id()::text::bigint)
);
create index if not exists profiles_rewritten_by_transaction
    on raw.profiles_rewritten (rewritten_xid);
create or replace function raw.profile_updated() returns trigger language plpgsql as $$
begin
    new.changed_xid := pg_current_xact_id()::text::bigint;
    return new;
end $$;
create or replace function raw.profile_rewritten() returns trigger language plpgsql as $$
begin
    insert into raw.profiles_rewritten (customer_id) values (old.customer_id);
    return null;
end $$;
create or replace trigger profile_updated before update on raw.customers
    for each row execute function raw.profile_updated();
create or replace trigger profile_deleted after delete on raw.customers
    for each row execute function raw.profile_rewritten();
create or replace trigger traits_rewritten after update or delete on raw.customer_traits
    for each row execute function raw.profile_rewritten();

create table if not exists raw.event_violations (
    customer_id text not null,
    event_id text not null,
    event_type text not null,
    occurred_at timestamp not null,
    kind text not null,
    detail text not null,
    recorded_at timestamp not null default (now() at time zone 'UTC'),
    primary key (customer_id, event_id, kind, detail)
);

create table if not exists raw.dead_letters (
    dead_letter_id bigserial primary key,
    received_at timestamp not null default (now() at time zone 'UTC'),
    message_id text,
    reason text not null,
    payload bytea,
    attributes jsonb
);
-- a bad message delivered (or replayed) again is stored once
create unique index if not exists dead_letters_once on raw.dead_letters (message_id)
    where message_id is not null;

create table if not exists segops.segment_membership (
    customer_id text not null,
    segment text not null,
    entered_at timestamp not null,
    source text not null check (source in ('batch', 'realtime')),
    attributes jsonb,
    primary key (customer_id, segment)
);
create index if not exists membership_by_segment on segops.segment_membership (segment);

create table if not exists segops.segment_membership_changes (
    customer_id text not null,
    change_id bigserial,
    segment text not null,
    change text not null check (change in ('enter', 'exit')),
    changed_at timestamp not null,
    source text not null check (source in ('batch', 'realtime')),
    attributes jsonb,
    recorded_at timestamp not null default (now() at time zone 'UTC'),
    published_at timestamp,
    primary key (customer_id, change_id)
);
create index if not exists changes_unpublished on segops.segment_membership_changes (change_id)
    where published_at is null;

create table if not exists segops.consumer_heartbeat (
    consumer_id text primary key,
    started_at timestamp not null,
    beat_at timestamp not null,
    evaluated_at timestamp not null,
    last_batch_at timestamp,
    lag_ms double precision,
    batches bigint not null default 0,
    events bigint not null default 0,
    duplicates bigint not null default 0,
    dead_letters bigint not null default 0,
    failed_segments jsonb
);

-- what the stream as a whole has done, whichever consumer did it: where the time sweep got to
create table if not exists segops.stream_state (
    name text primary key,
    at timestamp not null
);

-- each real-time segment's definition as last evaluated for every customer, and when
create table if not exists segops.realtime_segments (
    segment text primary key,
    definition text not null,
    evaluated_at timestamp not null
);

create table if not exists segops.reevaluate_queue (
    customer_id text not null,
    queued_at timestamp not null default (now() at time zone 'UTC'),
    reason text not null,
    primary key (customer_id, queued_at, reason)
);
"""


# Creating the tables is serialized: concurrent `create ... if not exists` can still collide.
SCHEMA_LOCK = 0x5E60_5C4E


# Recorded on schema `segops` once the DDL ran, so a process starting beside busy writers does
# not run it again: `create index if not exists` takes a lock on the table that waits for every
# open batch and holds up the next ones.
DDL_VERSION = hashlib.sha256(LIVE_DDL.encode()).hexdigest()[:16]


def ensure_live_schema(con: psycopg.Connection) -> None:
    """Create the live tables if missing (idempotent, safe for processes starting together)."""
    if _recorded_version(con) == DDL_VERSION:
        return
    with con.transaction():
        con.execute("select pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
        con.execute(LIVE_DDL)
        con.execute(f"comment on schema segops is 'ddl {DDL_VERSION}'")


def _recorded_version(con: psycopg.Connection) -> str | None:
    with con.transaction():
        (comment,) = con.execute("select (select obj_description(oid, 'pg_namespace') "
                                 "from pg_namespace where nspname = 'segops')").fetchone()
    return comment.removeprefix("ddl ") if comment else None
