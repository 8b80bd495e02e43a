"""The streaming consumer's heartbeat: written with every batch it commits, read by the Dagster
sensor, the nightly's checks and the CLI to tell a live stream from a stalled one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

STALE_AFTER = timedelta(seconds=60)
# A backfill runs the consumer's code under this id; its beats say nothing of the live stream.
REPLAY_CONSUMER_ID = "replay"


@dataclass(frozen=True)
class Heartbeat:
    consumer_id: str
    beat_at: datetime
    evaluated_at: datetime
    last_batch_at: datetime | None
    lag_ms: float | None
    batches: int
    events: int
    duplicates: int
    dead_letters: int
    failed_segments: dict[str, str]

    def age(self, now: datetime) -> timedelta:
        return now - self.beat_at

    def is_stale(self, now: datetime, after: timedelta = STALE_AFTER) -> bool:
        return self.age(now) > after


def latest_heartbeat(con: duckdb.DuckDBPyConnection) -> Heartbeat | None:
    """The most recent beat of any live consumer, or None if none ever ran."""
    row = con.execute(
        """
        select consumer_id, beat_at, evaluated_at, last_batch_at, lag_ms, batches, events,
               duplicates, dead_letters, failed_segments
        from segops.consumer_heartbeat where consumer_id <> ? order by beat_at desc limit 1
        """,
        [REPLAY_CONSUMER_ID],
    ).fetchone()
    if row is None:
        return None
    *fields, failed = row
    return Heartbeat(*fields, failed_segments=json.loads(failed) if failed else {})


@dataclass(frozen=True)
class BatchCounts:
    """What one commit of the consumer adds to its running totals."""

    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    lag_ms: float | None = None  # oldest publish time of the batch to now


def record_beat(
    con: duckdb.DuckDBPyConnection,
    consumer_id: str,
    *,
    evaluated_at: datetime,
    wall: datetime,
    counts: BatchCounts,
    failed_segments: Mapping[str, str],
) -> None:
    """Record, inside the batch's transaction, that `consumer_id` evaluated up to
    `evaluated_at` and what it stored."""
    values = {
        "id": consumer_id,
        "now": evaluated_at,
        "wall": wall,
        "last_batch": wall if counts.messages else None,
        "lag": counts.lag_ms,
        "batches": 1 if counts.messages else 0,
        "stored": counts.stored,
        "dups": counts.duplicates,
        "dead": counts.dead_letters,
        "failed": json.dumps(dict(failed_segments)),
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


def watermark(con: duckdb.DuckDBPyConnection, consumer_id: str) -> datetime | None:
    """The "now" `consumer_id` last evaluated at, where a restarted consumer resumes."""
    row = con.execute(
        "select evaluated_at from segops.consumer_heartbeat where consumer_id = ?", [consumer_id]
    ).fetchone()
    return row[0] if row else None
