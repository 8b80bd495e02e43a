"""A shop's tables in DuckDB, shaped as the live tables in PostgreSQL (segops/live_schema.py)
and the lake's copy: raw events (with what the tracking plan found wrong in those it let in),
customers (with every change to their traits), dead letters, membership and its change log.
The consumer's in-memory engine evaluates segments over the raw ones, the generator builds a
shop in them before it is copied into PostgreSQL, and an imported warehouse file has them.
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

create table if not exists segops.segment_membership (
    segment varchar not null,
    customer_id varchar not null,
    entered_at timestamp not null,
    source varchar not null,
    attributes json,
    primary key (segment, customer_id)
);

create table if not exists segops.segment_membership_changes (
    change_id bigint primary key,
    segment varchar not null,
    customer_id varchar not null,
    change varchar not null check (change in ('enter', 'exit')),
    changed_at timestamp not null,
    source varchar not null check (source in ('batch', 'realtime')),
    attributes json,
    recorded_at timestamp not null default (now() at time zone 'UTC'),
    published_at timestamp
);
"""


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables if missing (idempotent)."""
    con.execute(SCHEMA_DDL)
