"""A batch's customers' rows come from PostgreSQL into the in-memory DuckDB the segment SQL
reads: only theirs, their whole history, typed as in the warehouse; trait changes follow
the warehouse's rules there and land in PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from segops.customers import TraitChange
from segops.events import Event
from segops.live_scope import ScopeEngine
from streaming.live_storage import store_events

NOW = datetime(2026, 6, 1, 12, 0)


def event(event_id: str, customer_id: str, minutes_ago: int) -> Event:
    return Event(event_id, customer_id, "product_view", NOW - timedelta(minutes=minutes_ago),
                 '{"category": "home"}')


def test_only_the_scope_s_rows_arrive_typed_as_in_the_warehouse(live_dsn):
    engine = ScopeEngine()
    with psycopg.connect(live_dsn) as con:
        store_events(con, [event("old", "ann", 120), event("new", "ann", 10),
                           event("b1", "bob", 5)], NOW)
        engine.load(con, ["ann", "cy"])
    rows = engine.con.execute("select event_id, properties ->> 'category', typeof(occurred_at), "
                              "typeof(properties) from raw.events order by event_id").fetchall()
    assert rows == [("new", "home", "TIMESTAMP", "JSON"), ("old", "home", "TIMESTAMP", "JSON")], (
        "ann's whole history, none of bob's")


def test_trait_changes_land_in_postgres_and_a_later_one_wins(live_dsn):
    engine = ScopeEngine()
    signup = NOW - timedelta(days=1)
    with psycopg.connect(live_dsn) as con:
        engine.load(con, ["ann"])
        changed = engine.apply_traits(con, [
            TraitChange("ann", {"country": "DE", "plan": "pro"}, signup, "identify:i1")])
        engine.load(con, ["ann"])
        engine.apply_traits(con, [
            TraitChange("ann", {"country": "FR"}, signup - timedelta(hours=1), "identify:i0")])
        profile = con.execute("select country, traits, signed_up_at from raw.customers"
                              ).fetchall()
        history = con.execute("select count(*) from raw.customer_traits").fetchone()[0]
    assert changed == ["ann"]
    assert profile == [("DE", {"plan": "pro"}, signup - timedelta(hours=1))], (
        "the older identify leaves the newer country and is when ann was first seen")
    assert history == 3, "every change is kept"


def test_trait_changes_in_either_order_give_the_same_profile(live_dsn):
    """A late identify applied first: what each change sets is kept by its time, so the
    profile does not depend on the order the changes arrive in."""
    newer = {"country": "DE"}, NOW - timedelta(minutes=1)
    older = {"country": "NL", "city": "Leiden"}, NOW - timedelta(minutes=2)
    profiles = []
    with psycopg.connect(live_dsn) as con:
        for customer, order in (("ann", (older, newer)), ("bob", (newer, older))):
            for number, (traits, at) in enumerate(order):
                engine = ScopeEngine()
                engine.load(con, [customer])
                engine.apply_traits(con, [TraitChange(customer, traits, at, f"identify:{number}")])
            profiles.append(con.execute("select country, city from raw.customers "
                                        "where customer_id = %s", [customer]).fetchone())
    assert profiles == [("DE", "Leiden"), ("DE", "Leiden")]
