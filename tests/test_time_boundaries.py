"""Time alone moves customers in and out of real-time segments, whatever column and whatever
spelling of the interval a segment compares with `segops_now()`; what no sweep can follow is
refused as real-time, or re-evaluated for everyone as often as the segment asks."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest
import sqlglot

from demo.traffic import event
from streaming.time_boundaries import time_dependence
from tests.chaos_helpers import batch_members
from tests.live_helpers import started
from tests.projects import project_with_segments, realtime_yml
from tests.shop import add_customer
from tests.stream_helpers import incoming, members

NOW_SQL = ("COALESCE(CAST(GETVARIABLE('segops_now') AS TIMESTAMP), "
           "CAST(NOW() AT TIME ZONE 'UTC' AS TIMESTAMP))")


def dependence(where: str, select: str = "customer_id"):
    sql = f"select {select} from c where {where}".replace("NOW", NOW_SQL)
    return time_dependence(sqlglot.parse_one(sql, read="duckdb"))


@pytest.mark.parametrize("where", [
    "signed_up_at > NOW - interval '30 minutes'",
    "signed_up_at > NOW - interval 30 minute",
    "signed_up_at > NOW - interval '1' day",
    "signed_up_at > NOW - to_minutes(30)",
    "signed_up_at > NOW - interval '1 day 2 hours'",
    "NOW - interval '1 day' < signed_up_at",
    "signed_up_at + interval '1 day' >= NOW",
    "signed_up_at between NOW - interval '7 days' and NOW",
    "NOW between signed_up_at and signed_up_at + interval '1 day'",
    "signed_up_at >= date_trunc('day', NOW)",
    "cast(signed_up_at as date) = cast(NOW as date)",
])
def test_every_spelling_of_a_shifted_now_gives_a_boundary(where):
    found = dependence(where)
    assert found.unbounded == ()
    assert found.boundaries
    assert all(any("signed_up_at" in b.value_sql for b in group) for group in found.boundaries)


@pytest.mark.parametrize(("where", "select", "reason"), [
    ("extract(hour from NOW) between 9 and 17", "customer_id", "does not move forward"),
    ("signed_up_at > NOW - trial_days * interval '1 day'", "customer_id", "reads a column"),
    ("signed_up_at > now()", "customer_id", "reads the clock itself"),
    ("true", "customer_id, date_diff('day', signed_up_at, NOW) as age",
     "outside a comparison"),
])
def test_a_use_of_now_no_sweep_can_follow_is_named(where, select, reason):
    found = dependence(where, select)
    assert any(reason in problem for problem in found.unbounded), found.unbounded


def test_a_value_is_traced_to_the_source_column_it_comes_from():
    sql = f"""
        with carts as (select customer_id, max(occurred_at) as last_cart_at from e group by 1)
        select customer_id from carts where last_cart_at <= {NOW_SQL} - interval 30 minute
    """
    (group,) = time_dependence(sqlglot.parse_one(sql, read="duckdb")).boundaries
    assert {b.value_sql for b in group} == {"last_cart_at", "occurred_at"}
    averaged = sql.replace("max(occurred_at)", "avg(occurred_at)")
    assert "mixes several rows" in time_dependence(
        sqlglot.parse_one(averaged, read="duckdb")).unbounded[0]


NEW_ACCOUNTS = """
select customers.customer_id, customers.signed_up_at
from {{ ref('stg_customers') }} as customers
where customers.signed_up_at > {{ segops_now() }} - interval '1' day
  and not exists (
      select 1 from {{ ref('stg_events') }} as events
      where events.customer_id = customers.customer_id and events.event_type = 'purchase')
"""
BUSINESS_HOURS = """
select customer_id from {{ ref('stg_customers') }}
where extract(hour from {{ segops_now() }}) between 9 and 16
"""


@pytest.fixture
def project(manifest, live_dsn, tmp_path, monkeypatch):
    """The shipped project plus three real-time segments on customers' own timestamps and on
    the hour of the day, with the live state in this test's PostgreSQL database."""
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    return project_with_segments(tmp_path, monkeypatch, {
        "new_accounts_no_purchase": (NEW_ACCOUNTS, realtime_yml("new_accounts_no_purchase")),
        "business_hours": (BUSINESS_HOURS, realtime_yml(
            "business_hours", "          reevaluate_every: 5 minutes\n")),
        "business_hours_unbounded": (BUSINESS_HOURS, realtime_yml("business_hours_unbounded")),
    })


def test_a_customer_timestamp_boundary_passes_with_no_event(project):
    start = datetime(2026, 6, 1, 12, 0, 0)
    with psycopg.connect(project.postgres_dsn) as con:
        add_customer(con, "fresh", signed_up_at=start - timedelta(hours=23, minutes=59))
        add_customer(con, "older", signed_up_at=start - timedelta(hours=2))
    clock = [start]
    segment = "new_accounts_no_purchase"
    with started(project, clock=lambda: clock[0]) as consumer:
        assert set(members(project, segment)) == {"fresh", "older"}

        for offset, expected in ((timedelta(minutes=1, seconds=1), {"older"}),
                                 (timedelta(hours=22, seconds=1), set())):
            clock[0] = start + offset
            consumer.process([])  # a tick: no event at all
            assert set(members(project, segment)) == expected
            assert batch_members(project, clock[0])[segment] == expected, "parity with the batch"


def test_a_segment_read_at_the_hour_of_day_follows_its_reevaluation_period(project):
    start = datetime(2026, 6, 1, 8, 58, 0)
    with psycopg.connect(project.postgres_dsn) as con:
        add_customer(con, "anyone", signed_up_at=start - timedelta(days=3))
    clock = [start]
    with started(project, clock=lambda: clock[0]) as consumer:
        assert "anyone" not in members(project, "business_hours")
        refusal = consumer.segments.failed["business_hours_unbounded"]
        assert "EXTRACT(HOUR FROM segops_now())" in refusal and "reevaluate_every" in refusal

        clock[0] = start + timedelta(minutes=3)  # 09:01, but the period has not passed
        consumer.process([incoming(event("someone-else", "page_view", clock[0], path="/"))])
        consumer.maintain()
        assert "anyone" not in members(project, "business_hours")
        clock[0] = start + timedelta(minutes=5)  # 09:03: five minutes since the last full run
        consumer.maintain()
        assert "anyone" in members(project, "business_hours")
