"""The streaming consumer's heartbeat: written with every batch it commits, read by the Dagster
sensor, the nightly's checks and the CLI to tell a live stream from a stalled one."""

from __future__ import annotations

import json
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
