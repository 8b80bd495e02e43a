"""Helpers for tests of the live state in PostgreSQL with the models in the lake: a consumer
in-process, the nightly's jobs, and reading either store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import dagster as dg

from demo.traffic import event
from orchestration.run_now import load_job
from segops.clock import parse_timestamp, utc_now
from segops.lake import lake_connection
from streaming.live_consumer import LiveConsumer
from streaming.stream_loop import ConsumerConfig
from tests.stream_helpers import incoming

NOW = parse_timestamp("2026-06-01T12:00:00")


def views(customer: str, start_minute: int) -> list[dict]:
    """Three book views, a minute apart, the first `start_minute` minutes before NOW: enough
    for high_intent_browsers while they are within its hour."""
    return [event(customer, "product_view", NOW - timedelta(minutes=start_minute - i),
                  category="books", price=9.0) for i in range(3)]


def nightly(settings, job: str = "nightly_segments") -> dg.ExecuteInProcessResult:
    return load_job(settings, job).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def lake_rows(settings, sql: str) -> list[tuple]:
    with lake_connection(settings.postgres_dsn, settings.lake_data_path, read_only=True) as con:
        return con.execute(sql).fetchall()


@contextmanager
def started(settings, *, clock: Callable[[], datetime] = utc_now,
            **config) -> Iterator[LiveConsumer]:
    """A LiveConsumer in its session, started and its segments evaluated for everyone, for a
    test to drive batch by batch (offline unless `publish_changes=True`)."""
    consumer = LiveConsumer(settings, ConsumerConfig(**{
        "consumer_id": "one", "publish_changes": False, **config}), clock=clock)
    with consumer.session():
        consumer.start()
        consumer.catch_up()
        yield consumer


def stream(settings, *events: dict) -> None:
    with started(settings) as consumer:
        consumer.process([incoming(e) for e in events])
