"""The synthetic shop: deterministic, skewed, and shaped like the real stream."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import psycopg
import pytest

from demo import synthetic
from demo.synthetic import generate
from segops.events import IDENTIFY, Event
from segops.tracking_plan import load_plan
from streaming.validation import validate

NOW = datetime(2026, 6, 1, 12, 0, 0)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop") / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        summary = generate(con, customers=2_000, now=NOW, seed=7)
    with duckdb.connect(str(path)) as con:
        yield con, summary


def fingerprint(path, **kwargs) -> tuple:
    with duckdb.connect(str(path)) as con:
        generate(con, customers=500, now=NOW, **kwargs)
        return con.execute(
            """
            select count(*), sum(hash(event_id, customer_id, event_type, occurred_at,
                                      properties::varchar))
            from raw.events
            """
        ).fetchone()


def test_same_seed_same_shop_other_seed_other_shop(tmp_path):
    first = fingerprint(tmp_path / "a.duckdb", seed=1)
    assert fingerprint(tmp_path / "b.duckdb", seed=1) == first
    assert fingerprint(tmp_path / "c.duckdb", seed=2) != first


def test_sizes_and_every_event_type(shop):
    con, summary = shop
    assert summary.customers == 2_000
    assert con.execute("select count(*) from raw.customers").fetchone()[0] == 2_000
    assert 15_000 <= summary.events <= 25_000, "about ten events per customer"
    types = {row[0] for row in con.execute("select distinct event_type from raw.events").fetchall()}
    assert types == {"signup", "session_start", "page_view", "product_view", "add_to_cart",
                     "checkout", "purchase", "email_open"}


def test_events_are_consistent_with_customers_and_time(shop):
    con, _ = shop
    problems = con.execute(
        """
        select
            count(*) filter (where e.occurred_at > $now),
            count(*) filter (where e.occurred_at < c.signed_up_at),
            count(*) filter (where c.customer_id is null),
            count(*) - count(distinct e.event_id)
        from raw.events e left join raw.customers c using (customer_id)
        """,
        {"now": NOW},
    ).fetchone()
    assert problems == (0, 0, 0, 0)


def test_activity_is_skewed(shop):
    con, _ = shop
    top_share = con.execute(
        """
        with per_customer as (
            select customer_id, count(*) as n from raw.events group by 1
        )
        select sum(n) filter (where rank <= 20) / sum(n)
        from (select n, row_number() over (order by n desc) as rank from per_customer)
        """
    ).fetchone()[0]
    assert top_share > 0.05, "the top 1 % of customers make far more than 1 % of events"


def test_properties_match_each_event_type(shop):
    con, _ = shop
    bad = con.execute(
        """
        select
            count(*) filter (where event_type = 'purchase'
                             and not (properties->>'order_value')::double > 0),
            count(*) filter (where event_type in ('product_view', 'add_to_cart')
                             and (properties->>'category') is null),
            count(*) filter (where event_type = 'add_to_cart'
                             and (properties->>'quantity')::int < 1)
        from raw.events
        """
    ).fetchone()
    assert bad == (0, 0, 0)


def test_rows_are_valid_stream_messages(shop):
    con, _ = shop
    rows = con.execute(
        """
        select to_json({event_id: event_id, customer_id: customer_id, event_type: event_type,
                        occurred_at: strftime(occurred_at, '%Y-%m-%dT%H:%M:%S.%fZ'),
                        properties: properties})::varchar
        from raw.events using sample 300 rows
        """
    ).fetchall()
    results = [validate(row[0].encode(), NOW, load_plan()) for row in rows]
    assert all(isinstance(r, Event) for r in results), [r for r in results if not isinstance(
        r, Event)][:3]


def test_recent_activity_feeds_the_real_time_segments(shop):
    con, _ = shop
    open_carts, hour_views = con.execute(
        """
        select
            (select count(*) from raw.events c
             where c.event_type = 'add_to_cart'
               and c.occurred_at between $now - interval '24 hours' and $now - interval '30 minutes'
               and not exists (select 1 from raw.events p where p.customer_id = c.customer_id
                               and p.event_type = 'purchase' and p.occurred_at >= c.occurred_at)),
            (select count(*) from raw.events
             where event_type = 'product_view' and occurred_at > $now - interval '1 hour')
        """,
        {"now": NOW},
    ).fetchone()
    assert open_carts > 0
    assert hour_views > 0
    recent_signups = con.execute(
        "select count(*) from raw.customers where signed_up_at > ?", [NOW - timedelta(days=7)]
    ).fetchone()[0]
    assert recent_signups > 0


def test_each_event_type_carries_the_properties_the_contract_declares(shop):
    con, _ = shop
    keys = con.execute(
        "select event_type, list(distinct key) from (select event_type, "
        "unnest(json_keys(properties)) as key from raw.events) group by event_type"
    ).fetchall()
    assert {event_type for event_type, _ in keys} == set(load_plan().events) - {IDENTIFY}, (
        "the shop's profiles are loaded into raw.customers, not sent as identify events")
    for event_type, properties in keys:
        declared = load_plan().events[event_type]
        assert set(declared.required) <= set(properties) <= {*declared.required,
                                                             *declared.optional}, event_type


def test_a_big_shop_is_generated_in_chunks_as_one_shop(live_dsn, monkeypatch):
    """Past CHUNK_CUSTOMERS customers the shop is made a chunk at a time (a 10M-customer shop
    does not fit in memory at once): one id width, every customer once, no event id twice."""
    monkeypatch.setattr(synthetic, "CHUNK_CUSTOMERS", 400)
    summary = synthetic.generate_into_postgres(live_dsn, customers=1_000, now=NOW)
    with psycopg.connect(live_dsn) as pg:
        customers, lowest, highest = pg.execute(
            "select count(distinct customer_id), min(customer_id), max(customer_id) "
            "from raw.customers").fetchone()
        events, ids, owners = pg.execute(
            "select count(*), count(distinct event_id), count(distinct customer_id) "
            "from raw.events").fetchone()
        strangers = pg.execute("select count(*) from raw.events where customer_id not in "
                               "(select customer_id from raw.customers)").fetchone()[0]
    assert (customers, lowest, highest) == (1_000, "c0000001", "c0001000")
    assert events == ids == summary.events, "every event once, under an id of its own"
    assert owners == 1_000 and strangers == 0, "every chunk's customers have their events"
