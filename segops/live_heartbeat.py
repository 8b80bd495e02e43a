"""The consumers' heartbeats in PostgreSQL: one row per consumer, written in each batch's
transaction, read like the warehouse's (segops/heartbeat.py) to tell live consumers from
stalled ones."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

import psycopg

from segops.heartbeat import BatchCounts, Heartbeat


def record_beat(con: psycopg.Connection, consumer_id: str, *, evaluated_at: datetime,
                wall: datetime, counts: BatchCounts, failed_segments: Mapping[str, str]) -> None:
    """Record, inside the batch's transaction, that `consumer_id` evaluated up to
    `evaluated_at` and what it stored."""
    con.execute(
        """
        insert into segops.consumer_heartbeat as h (consumer_id, started_at, beat_at,
            evaluated_at, last_batch_at, lag_ms, batches, events, duplicates, dead_letters,
            failed_segments)
        values (%(id)s, %(wall)s, %(wall)s, %(now)s, %(last_batch)s, %(lag)s, %(batches)s,
            %(stored)s, %(dups)s, %(dead)s, %(failed)s)
        on conflict (consumer_id) do update set
            beat_at = excluded.beat_at,
            evaluated_at = excluded.evaluated_at,
            last_batch_at = coalesce(excluded.last_batch_at, h.last_batch_at),
            lag_ms = coalesce(excluded.lag_ms, h.lag_ms),
            batches = h.batches + excluded.batches,
            events = h.events + excluded.events,
            duplicates = h.duplicates + excluded.duplicates,
            dead_letters = h.dead_letters + excluded.dead_letters,
            failed_segments = excluded.failed_segments
        """,
        {"id": consumer_id, "now": evaluated_at, "wall": wall,
         "last_batch": wall if counts.messages else None, "lag": counts.lag_ms,
         "batches": 1 if counts.messages else 0, "stored": counts.stored,
         "dups": counts.duplicates, "dead": counts.dead_letters,
         "failed": json.dumps(dict(failed_segments))},
    )


def heartbeats(con: psycopg.Connection) -> list[Heartbeat]:
    """Every consumer's latest beat, most recent first."""
    return [Heartbeat(*fields, failed_segments=failed or {}) for *fields, failed in con.execute(
        """
        select consumer_id, beat_at, evaluated_at, last_batch_at, lag_ms, batches, events,
               duplicates, dead_letters, failed_segments
        from segops.consumer_heartbeat order by beat_at desc
        """).fetchall()]
