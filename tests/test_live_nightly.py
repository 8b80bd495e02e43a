"""The nightly job when the stream keeps the live tables in PostgreSQL: it copies what the
stream stored into the warehouse (also every five minutes, for preview), builds the models
there, applies the nightly segments to PostgreSQL's membership, and checks the real-time ones,
which the stream keeps, for parity."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import psycopg
import pytest

from demo.traffic import event
from orchestration.build import build_definitions
from segops.clock import parse_timestamp
from segops.dbt import run_dbt
from segops.settings import load_settings
from segops.warehouse import connect
from streaming.live_consumer import LiveConsumer
from streaming.stream_loop import ConsumerConfig
from tests.stream_helpers import incoming

NOW = parse_timestamp("2026-06-01T12:00:00")


@pytest.fixture
def live_shop(warehouse, live_dsn, monkeypatch):
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    monkeypatch.setenv("SEGOPS_NOW", NOW.isoformat())
    return load_settings()


def stream(settings, *events: dict) -> None:
    consumer = LiveConsumer(settings, ConsumerConfig(consumer_id="one", publish_changes=False))
    with consumer.session():
        consumer.start()
        consumer.process([incoming(e) for e in events])


def nightly(settings, job: str = "nightly_segments") -> dg.ExecuteInProcessResult:
    run_dbt(settings, ["parse"])
    return build_definitions(settings).resolve_job_def(job).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def rows(settings, sql: str) -> list[tuple]:
    with psycopg.connect(settings.postgres_dsn) as con:
        return con.execute(sql).fetchall()


def test_the_nightly_reads_what_the_stream_stored_and_writes_postgres(live_shop):
    day = timedelta(days=1)
    stream(live_shop,
           event("berlin", "identify", NOW - 2 * day, country="DE"),
           event("paris", "identify", NOW - 2 * day, country="FR"),
           event("buyer", "purchase", NOW - day, order_value=80.0, order_id="o1"))

    first = nightly(live_shop)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    with connect(live_shop.warehouse, read_only=True) as con:
        assert con.execute("select count(*) from raw.events").fetchone()[0] == 3
    assert rows(live_shop, "select customer_id, source from segops.segment_membership "
                           "where segment = 'dach_customers'") == [("berlin", "batch")]
    assert ("buyer", "recent_purchasers") in rows(
        live_shop, "select customer_id, segment from segops.segment_membership")
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed
              for c in first.get_asset_check_evaluations()}
    assert checks[("membership/recent_purchasers", "parity")], "the stream agrees with dbt"

    stream(live_shop, event("berlin", "identify", NOW - day, country="FR"),
           event("paris", "page_view", NOW - day, path="/"))
    copied = nightly(live_shop, "copy_live_raw")  # what the five-minute schedule runs
    assert copied.success
    with connect(live_shop.warehouse, read_only=True) as con:
        assert con.execute("select count(*) from raw.events").fetchone()[0] == 5
        assert con.execute("select country from raw.customers where customer_id = 'berlin'"
                           ).fetchall() == [("FR",)]
    second = nightly(live_shop)
    assert second.success
    assert rows(live_shop, "select customer_id, change, source from "
                           "segops.segment_membership_changes where segment = 'dach_customers' "
                           "order by change_id") == [("berlin", "enter", "batch"),
                                                     ("berlin", "exit", "batch")]
