"""The real-time promise, as a property: for segments drawn from a small grammar (windows of
several lengths on events and on customers' own timestamps, counts and sums over windows, the
absence of a later event, traits, a shipped real-time segment) and random streams of events and
identify events with times around the boundaries, the membership the real consumer leaves in
PostgreSQL equals the batch evaluation of the same SQL over every stored row, at every step of
a clock moved forward by hand.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import psycopg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from demo.traffic import event, rfc3339
from segops.catalog import Catalog
from streaming.evaluator import RealtimeEvaluator
from tests.chaos_helpers import batch_members
from tests.live_helpers import started
from tests.stream_helpers import incoming, members

NOW_SQL = ("coalesce(cast(getvariable('segops_now') as timestamp), "
           "cast(now() at time zone 'UTC' as timestamp))")
EVENTS = '"memory"."staging"."stg_events"'
CUSTOMERS = '"memory"."staging"."stg_customers"'
CART_ABANDONERS = '"memory"."segments"."cart_abandoners"'
START = datetime(2026, 6, 1, 12, 0, 0)
SHOPPERS = ("ann", "bob", "cid", "dee", "eve", "fay")  # most steps leave most untouched
WINDOWS = ("10 minutes", "30 minutes", "1 hour", "1 day")
TYPES = ("product_view", "add_to_cart", "purchase")

windows = st.sampled_from(WINDOWS)
types = st.sampled_from(TYPES)
predicates = st.one_of(
    st.builds(lambda t, w: (
        f"exists (select 1 from {EVENTS} as e where e.customer_id = c.customer_id "
        f"and e.event_type = '{t}' and e.occurred_at > {NOW_SQL} - interval '{w}' "
        f"and e.occurred_at <= {NOW_SQL})"), types, windows),
    st.builds(lambda t, w, k: (
        f"(select count(*) from {EVENTS} as e where e.customer_id = c.customer_id "
        f"and e.event_type = '{t}' and e.occurred_at between {NOW_SQL} - interval '{w}' "
        f"and {NOW_SQL}) >= {k}"), types, windows, st.integers(1, 3)),
    st.builds(lambda w, v: (
        f"(select coalesce(sum(e.order_value), 0) from {EVENTS} as e "
        f"where e.customer_id = c.customer_id and e.event_type = 'purchase' "
        f"and e.occurred_at > {NOW_SQL} - interval '{w}' and e.occurred_at <= {NOW_SQL}) > {v}"),
        windows, st.sampled_from((10, 25))),
    st.builds(lambda w: (
        f"(select max(e.occurred_at) from {EVENTS} as e where e.customer_id = c.customer_id "
        f"and e.event_type = 'add_to_cart' and e.occurred_at <= {NOW_SQL}) "
        f"<= {NOW_SQL} - interval '{w}' and not exists (select 1 from {EVENTS} as p "
        f"where p.customer_id = c.customer_id and p.event_type = 'purchase' "
        f"and p.occurred_at <= {NOW_SQL} and p.occurred_at >= (select max(e.occurred_at) "
        f"from {EVENTS} as e where e.customer_id = c.customer_id "
        f"and e.event_type = 'add_to_cart' and e.occurred_at <= {NOW_SQL}))"), windows),
    st.builds(lambda w: f"c.signed_up_at > {NOW_SQL} - interval '{w}'", windows),
    st.builds(lambda w: f"c.signed_up_at + interval '{w}' <= {NOW_SQL}", windows),
    st.sampled_from(("c.country = 'NL'", "(c.traits ->> 'plan') = 'pro'")),
    st.just(f"c.customer_id in (select customer_id from {CART_ABANDONERS})"),
)
segments = st.lists(predicates, min_size=1, max_size=3).map(
    lambda where: f"select c.customer_id from {CUSTOMERS} as c where " + " and ".join(where))

offsets = st.integers(-90 * 60, 60).map(lambda s: timedelta(seconds=s))  # mostly the recent past
shop_events = st.builds(
    lambda who, kind, offset, value: (who, kind, offset, value),
    st.sampled_from(SHOPPERS), st.sampled_from((*TYPES, "identify")), offsets,
    st.sampled_from((5.0, 20.0)))
steps = st.lists(st.tuples(
    st.sampled_from((1, 59, 60, 61, 299, 300, 301, 599, 600, 601, 1799, 1800, 1801, 3600,
                     86_401)),
    st.lists(shop_events, max_size=2)), min_size=1, max_size=8)


def message(who: str, kind: str, at: datetime, value: float, number: int) -> dict:
    if kind == "identify":
        body = event(who, kind, at, country="NL" if value < 10 else "DE",
                     plan="pro" if value < 10 else "free",
                     signed_up_at=rfc3339(at - timedelta(minutes=5)))
    elif kind == "purchase":
        body = event(who, kind, at, order_value=value, order_id=f"o{number}")
    else:
        body = event(who, kind, at, category="home", price=value)
    return {**body, "event_id": f"e{number}"}


# A customer's own timestamp passing its window with no event: the case an events-only sweep
# misses, always tried.
SIGNED_UP_RECENTLY = (f"select c.customer_id from {CUSTOMERS} as c "
                      f"where c.signed_up_at > {NOW_SQL} - interval '10 minutes'")
QUIET_AFTER_IDENTIFY = [(1, [("ann", "identify", timedelta(0), 5.0)]), (1, []), (300, [])]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sql=segments, stream=steps)
@example(sql=SIGNED_UP_RECENTLY, stream=QUIET_AFTER_IDENTIFY)
def test_stream_membership_equals_the_batch_at_every_step(live_shop, sql, stream):
    """The manifest gains one real-time segment, `generated`, with the drawn SQL; the live
    tables start from three customers."""
    settings_ = live_shop
    manifest = json.loads(settings_.manifest_path.read_text())
    node = json.loads(json.dumps(manifest["nodes"]["model.segops.cart_abandoners"]))
    node.update(name="generated", unique_id="model.segops.generated",
                fqn=["segops", "segments", "generated"], compiled_code=sql,
                relation_name='"memory"."segments"."generated"',
                original_file_path="models/segments/generated.sql")
    node["depends_on"]["nodes"] = ["model.segops.stg_events", "model.segops.stg_customers",
                                   "model.segops.cart_abandoners"]
    manifest["nodes"]["model.segops.generated"] = node
    settings_.manifest_path.write_text(json.dumps(manifest))
    empty_live_tables(settings_.postgres_dsn)
    with psycopg.connect(settings_.postgres_dsn) as con:
        con.execute("insert into raw.customers (customer_id, country, signed_up_at) "
                    "select unnest(%s::text[]), 'DE', %s",
                    [list(SHOPPERS), START - timedelta(days=30)])
    batch = RealtimeEvaluator.from_catalog(Catalog.load(settings_.manifest_path))

    clock = [START]
    with started(settings_, clock=lambda: clock[0]) as consumer:
        assert "generated" in consumer.segments.evaluator.queries, consumer.segments.failed
        number = 0
        for seconds, messages in stream:
            clock[0] += timedelta(seconds=seconds)
            batch_of = []
            for who, kind, offset, value in messages:
                number += 1
                batch_of.append(incoming(message(who, kind, clock[0] + min(offset, timedelta(0)),
                                                 value, number)))
            consumer.process(batch_of)
            assert set(members(settings_, "generated")) == batch_members(
                settings_, clock[0], batch)["generated"], f"at {clock[0]}"


def empty_live_tables(dsn: str) -> None:
    """Every live table emptied (hypothesis runs its examples in one test's database): rows,
    membership, heartbeats, the sweep's time and what was evaluated for everyone."""
    with psycopg.connect(dsn) as con:
        tables = [f"{schema}.{name}" for schema, name in con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('raw', 'segops') and table_type = 'BASE TABLE'").fetchall()]
        con.execute(f"truncate {', '.join(tables)} restart identity")
