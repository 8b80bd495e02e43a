"""Every segment's rule against hand-made events at a fixed NOW, through real dbt on real DuckDB.

One `dbt build` (pinned with the `segops_now` var) serves every semantic test; a second build
without the var checks that real-time views follow the session's `segops_now` variable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot

from segops.catalog import Catalog
from streaming.scoping import ranking_problem
from tests.projects import project_with_segments
from tests.scratch import Scratch, scratch_build

NOW = datetime(2026, 6, 1, 12, 0, 0)
SEGMENTS_DIR = Path(__file__).resolve().parents[1] / "dbt_project" / "models" / "segments"
REALTIME = ("cart_abandoners", "high_intent_browsers", "new_signups_no_purchase",
            "recent_purchasers", "churn_risk")
NIGHTLY = ("vip_quarterly", "dach_customers")
TIMED = (*REALTIME, "vip_quarterly")  # every segment but dach_customers depends on "now"
VIP_BUYERS = 40  # customers with revenue > 0 in the 90 days before NOW, across every scenario


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def later(**delta: float) -> datetime:
    return NOW + timedelta(**delta)


@dataclass
class Shop:
    """Writes customers and events into the raw tables, as the generator and stream would."""

    con: duckdb.DuckDBPyConnection
    customers: set[str] = field(default_factory=set)
    buyers_90d: set[str] = field(default_factory=set)
    _ids: Iterator[int] = field(default_factory=lambda: count(1))

    def customer(self, customer_id: str, *, country: str | None = "US", city: str = "Springfield",
                 signed_up_at: datetime = NOW - timedelta(days=365)) -> None:
        self.con.execute(
            "insert into raw.customers (customer_id, email, country, city, acquisition_channel, "
            "signed_up_at) values (?, ?, ?, ?, ?, ?)",
            [customer_id, f"{customer_id}@example.com", country, city, "organic", signed_up_at],
        )
        self.customers.add(customer_id)

    def event(self, customer_id: str, event_type: str, at: datetime, **properties: Any) -> None:
        if customer_id not in self.customers:
            self.customer(customer_id)
        self.con.execute(
            "insert into raw.events (event_id, customer_id, event_type, occurred_at, properties) "
            "values (?, ?, ?, ?, ?)",
            [f"e{next(self._ids):06d}", customer_id, event_type, at, json.dumps(properties)],
        )

    def cart(self, customer_id: str, at: datetime, category: str = "shoes",
             price: float = 40.0, **properties: Any) -> None:
        self.event(customer_id, "add_to_cart", at, product_id=f"p-{category}",
                   category=category, price=price, **properties)

    def views(self, customer_id: str, category: str, *times: datetime) -> None:
        for at in times:
            self.event(customer_id, "product_view", at, product_id=f"p-{category}",
                       category=category, price=10.0)

    def purchase(self, customer_id: str, at: datetime, value: float = 50.0) -> None:
        self.event(customer_id, "purchase", at, order_id=f"o-{customer_id}-{at:%Y%m%d%H%M%S}",
                   order_value=value)
        if ago(days=90) <= at <= NOW and value > 0:
            self.buyers_90d.add(customer_id)


def load_shop(shop: Shop) -> None:
    # cart_abandoners: latest add_to_cart in [now - 24 h, now - 30 min], no purchase since
    shop.cart("cart_31m", ago(minutes=31), quantity=2)
    shop.cart("cart_29m", ago(minutes=29))
    shop.cart("cart_30m", ago(minutes=30))
    shop.cart("cart_24h", ago(hours=24))
    shop.cart("cart_25h", ago(hours=25))
    shop.cart("cart_bought_after", ago(hours=2))
    shop.purchase("cart_bought_after", ago(hours=1))
    shop.purchase("cart_bought_before", ago(hours=3))
    shop.cart("cart_bought_before", ago(hours=2))
    shop.cart("cart_bought_same_time", ago(hours=2))
    shop.purchase("cart_bought_same_time", ago(hours=2))
    shop.cart("cart_recarted", ago(hours=5), category="books")
    shop.cart("cart_recarted", ago(minutes=10), category="toys")
    shop.cart("cart_latest_counts", ago(hours=26), category="toys")
    shop.cart("cart_latest_counts", ago(hours=1), category="books", price=12.5)
    shop.cart("cart_future_purchase", ago(hours=2))
    shop.purchase("cart_future_purchase", later(hours=1))
    shop.cart("cart_future_cart", ago(hours=2), category="shoes")
    shop.cart("cart_future_cart", later(minutes=10), category="toys")

    # high_intent_browsers: 3+ views of one category in (now - 1 h, now]
    shop.views("browse_3", "shoes", ago(minutes=50), ago(minutes=30), ago(minutes=5))
    shop.views("browse_2", "shoes", ago(minutes=30), ago(minutes=5))
    shop.views("browse_spread", "shoes", ago(minutes=30))
    shop.views("browse_spread", "toys", ago(minutes=20))
    shop.views("browse_spread", "books", ago(minutes=10))
    shop.views("browse_one_old", "shoes", ago(minutes=61), ago(minutes=30), ago(minutes=5))
    shop.views("browse_hour_edge", "shoes", ago(hours=1), ago(minutes=30), ago(minutes=5))
    shop.views("browse_at_now", "shoes", ago(minutes=59), ago(minutes=1), NOW)
    shop.views("browse_future", "shoes", ago(minutes=30), ago(minutes=5), later(minutes=1))
    shop.views("browse_most", "books", *(ago(minutes=m) for m in (40, 30, 20)))
    shop.views("browse_most", "garden", *(ago(minutes=m) for m in (45, 35, 25, 15)))
    shop.views("browse_tie", "toys", *(ago(minutes=m) for m in (40, 30, 20)))
    shop.views("browse_tie", "books", *(ago(minutes=m) for m in (45, 35, 25)))

    # new_signups_no_purchase: signup event in [now - 7 days, now], never purchased
    shop.event("signup_6d", "signup", ago(days=6))
    shop.event("signup_7d", "signup", ago(days=7))
    shop.event("signup_8d", "signup", ago(days=8))
    shop.event("signup_6d_buyer", "signup", ago(days=6))
    shop.purchase("signup_6d_buyer", ago(days=1), value=25.0)
    shop.purchase("signup_guest_buyer", ago(days=30))
    shop.event("signup_guest_buyer", "signup", ago(days=2))
    shop.event("signup_6d_future_buyer", "signup", ago(days=6))
    shop.purchase("signup_6d_future_buyer", later(hours=1))
    shop.event("signup_future", "signup", later(hours=1))
    shop.customer("signup_record_only", signed_up_at=ago(days=2))  # no signup event

    # recent_purchasers: a purchase in [now - 3 days, now]
    shop.purchase("recent_2d", ago(days=2), value=30.0)
    shop.purchase("recent_2d", ago(days=1), value=20.0)
    shop.purchase("recent_3d", ago(days=3))
    shop.purchase("recent_4d", ago(days=4))
    shop.purchase("recent_mixed", ago(days=4), value=100.0)
    shop.purchase("recent_mixed", ago(days=1), value=10.0)
    shop.purchase("recent_future", later(minutes=1))

    # churn_risk: 2+ purchases up to now, last event of any type before now - 30 days
    shop.purchase("churn_31d", ago(days=60))
    shop.purchase("churn_31d", ago(days=31))
    shop.purchase("churn_29d", ago(days=60))
    shop.purchase("churn_29d", ago(days=40))
    shop.event("churn_29d", "page_view", ago(days=29))
    shop.purchase("churn_one_purchase", ago(days=40))
    shop.purchase("churn_30d", ago(days=60))
    shop.purchase("churn_30d", ago(days=30))
    shop.purchase("churn_future_event", ago(days=60))
    shop.purchase("churn_future_event", ago(days=40))
    shop.event("churn_future_event", "page_view", later(days=1))
    shop.purchase("churn_quiet_browser", ago(days=100))
    shop.purchase("churn_quiet_browser", ago(days=95))
    shop.event("churn_quiet_browser", "email_open", ago(days=31))
    shop.purchase("churn_future_purchase", ago(days=60))
    shop.purchase("churn_future_purchase", later(hours=1))

    # dach_customers: country DE, AT or CH
    shop.customer("dach_de", country="DE", city="Berlin")
    shop.customer("dach_at", country="AT", city="Wien")
    shop.customer("dach_ch", country="CH", city="Zürich")
    shop.customer("dach_lowercase", country="de", city="Köln")
    shop.customer("dach_fr", country="FR", city="Paris")
    shop.customer("dach_no_country", country=None)

    # vip_quarterly: out of the ranking entirely (old, future, zero revenue)
    shop.purchase("vip_old", ago(days=91), value=1_000_000.0)
    shop.purchase("vip_future", later(days=1), value=1_000_000.0)
    shop.purchase("vip_zero", ago(days=10), value=0.0)
    # the biggest spender, over two orders; then distinct revenues up to VIP_BUYERS buyers in all
    shop.purchase("vip_whale", ago(days=20), value=3000.0)
    shop.purchase("vip_whale", ago(days=10), value=3000.0)
    regular = VIP_BUYERS - len(shop.buyers_90d)
    for k in range(1, regular + 1):
        shop.purchase(f"vip_{k:02d}", ago(days=10), value=1000.0 + 10 * k)
    assert len(shop.buyers_90d) == VIP_BUYERS


def members(built: Scratch, segment: str, *, now: datetime | None = None) -> dict[str, dict]:
    """The segment's rows by customer_id (evaluated at `now` in this session, if given)."""
    with built.connect() as con:
        if now is not None:
            con.execute(f"set variable segops_now = timestamp '{now.isoformat(sep=' ')}'")
        return read_members(con, segment)


def read_members(con: duckdb.DuckDBPyConnection, segment: str) -> dict[str, dict]:
    cursor = con.execute(f'select * from segments."{segment}" order by customer_id')
    columns = [c[0] for c in cursor.description]
    rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    assert len({r["customer_id"] for r in rows}) == len(rows), f"{segment}: duplicate members"
    return {r["customer_id"]: r for r in rows}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    """The shop above, built once by dbt with the clock pinned to NOW."""
    return scratch_build(tmp_path_factory.mktemp("segments_pinned"),
                         lambda con: load_shop(Shop(con)),
                         dbt_vars={"segops_now": NOW.isoformat(sep=" ")})


# --- the contract ------------------------------------------------------------------------------


def test_one_sql_and_one_yml_per_segment():
    sql = {p.stem for p in SEGMENTS_DIR.glob("*.sql")}
    yml = {p.stem for p in SEGMENTS_DIR.glob("*.yml") if not p.name.startswith("_")}
    assert sql == yml == set(REALTIME + NIGHTLY)


def test_segments_keep_the_contract(built):
    manifest = json.loads(built.manifest_path.read_text())
    catalog = Catalog(manifest)
    assert set(catalog.segments) == set(REALTIME + NIGHTLY)
    for name, segment in catalog.segments.items():
        assert segment.problems == (), segment.problems
        node = manifest["nodes"][segment.unique_id]
        meta = node["config"]["meta"]["segment"]
        assert meta["refresh"] == ("realtime" if name in REALTIME else "nightly"), name
        assert meta["description"].strip(), name
        assert node["description"].strip(), name
        raw = node["raw_code"].lower()
        assert ("{{ segops_now() }}" in raw) == (name in TIMED), name
        bare = re.search(r"(?<![\w.])(now|current_timestamp|current_date|getdate)\b", raw)
        assert bare is None, f"{name} uses a bare {bare and bare.group()}"
        tree = sqlglot.parse_one(segment.compiled_sql, read="duckdb")
        if name in REALTIME:
            assert segment.is_realtime, name
            assert meta["window"], name
            assert segment.materialized == "view", name
            for upstream in catalog.upstream(segment.unique_id):
                if upstream.resource_type == "model":
                    assert upstream.materialized in ("view", "ephemeral"), (name, upstream)
            assert ranking_problem(tree) is None, name
    assert ranking_problem(
        sqlglot.parse_one(catalog.segments["vip_quarterly"].compiled_sql, read="duckdb")
    ), "vip_quarterly ranks customers against each other"


def test_a_json_lookup_duckdb_would_misread_is_refused_with_the_fix(tmp_path, monkeypatch):
    """DuckDB 1.5 reads `a and traits ->> 'plan' = 'pro'` as `((a and traits) ->> 'plan') =
    'pro'`: refused, naming the line and the parentheses that fix it."""
    nightly = "models:\n  - name: {}\n    config:\n      meta:\n        segment:\n" \
              "          refresh: nightly\n"
    where = "select customer_id from {{{{ ref('stg_customers') }}}} where country = 'DE' and {}"
    settings = project_with_segments(tmp_path, monkeypatch, {
        "misread": (where.format("traits ->> 'plan' = 'pro'"), nightly.format("misread")),
        "as_written": (where.format("(traits ->> 'plan') = 'pro'"), nightly.format("as_written")),
    })
    segments = Catalog.load(settings.manifest_path).segments
    assert segments["as_written"].problems == ()
    [problem] = segments["misread"].problems
    assert "segment 'misread' (models/segments/misread.sql)" in problem
    assert "and traits ->> 'plan' = 'pro'`" in problem and "put it in parentheses" in problem


def test_realtime_segments_are_views_and_nightly_ones_tables(built):
    with built.connect() as con:
        kinds = dict(con.execute(
            "select table_name, table_type from information_schema.tables "
            "where table_schema = 'segments'"
        ).fetchall())
    assert kinds == {
        **{name: "VIEW" for name in REALTIME}, **{name: "BASE TABLE" for name in NIGHTLY}
    }


def test_models_land_in_their_own_schemas(built):
    with built.connect() as con:
        found = set(con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('staging', 'marts')"
        ).fetchall())
    assert found == {
        ("staging", "stg_customers"), ("staging", "stg_events"), ("marts", "customer_profiles")
    }


def test_pinned_build_compiles_the_var_into_every_segment(built):
    manifest = json.loads(built.manifest_path.read_text())
    for name in TIMED:
        compiled = manifest["nodes"][f"model.segops.{name}"]["compiled_code"]
        assert "cast('2026-06-01 12:00:00' as timestamp)" in compiled, name
        assert "getvariable" not in compiled, name


# --- staging and marts -------------------------------------------------------------------------


def test_stg_events_types_the_json_properties(built):
    with built.connect() as con:
        cart = con.execute(
            "select product_id, category, price, quantity, order_id, order_value "
            "from staging.stg_events where customer_id = 'cart_31m'"
        ).fetchone()
        purchase = con.execute(
            "select order_id, order_value, price from staging.stg_events "
            "where customer_id = 'recent_mixed' and occurred_at = ?", [ago(days=1)]
        ).fetchone()
        types = dict(con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'staging' and table_name = 'stg_events'"
        ).fetchall())
    assert cart == ("p-shoes", "shoes", 40.0, 2, None, None)
    assert purchase == (f"o-recent_mixed-{ago(days=1):%Y%m%d%H%M%S}", 10.0, None)
    assert (types["price"], types["quantity"], types["order_value"]) == (
        "DECIMAL(18,2)", "INTEGER", "DECIMAL(18,2)"
    ), "money is a decimal, so attributes read 184.86, not 184.85999999999999"
    assert types["product_id"] == types["category"] == types["order_id"] == "VARCHAR"


def test_customer_profiles(built):
    with built.connect() as con:
        cursor = con.execute("select * from marts.customer_profiles")
        columns = [c[0] for c in cursor.description]
        profiles = {r[0]: dict(zip(columns, r, strict=True)) for r in cursor.fetchall()}
        customers = con.execute("select count(*) from raw.customers").fetchone()[0]
    assert len(profiles) == customers
    mixed = profiles["recent_mixed"]
    assert (mixed["orders"], mixed["lifetime_revenue"]) == (2, 110.0)
    assert mixed["first_seen_at"] == ago(days=4)
    assert mixed["last_seen_at"] == ago(days=1)
    future = profiles["churn_future_event"]
    assert future["last_seen_at"] == ago(days=40), "events after now are ignored"
    assert profiles["churn_future_purchase"]["orders"] == 1
    berlin = profiles["dach_de"]
    assert (berlin["country"], berlin["city"], berlin["orders"]) == ("DE", "Berlin", 0)
    assert berlin["lifetime_revenue"] == 0
    assert berlin["first_seen_at"] is None


# --- the segments ------------------------------------------------------------------------------


def test_cart_abandoners(built):
    found = members(built, "cart_abandoners")
    assert set(found) == {
        "cart_31m",               # 31 minutes ago
        "cart_30m",               # exactly 30 minutes: bound included
        "cart_24h",               # exactly 24 hours: bound included
        "cart_bought_before",     # the purchase came before the cart
        "cart_latest_counts",     # the older cart is out of the window, the latest is in
        "cart_future_purchase",   # a purchase after now does not count yet
        "cart_future_cart",       # nor does an add_to_cart after now
    }
    # out: cart_29m (too fresh), cart_25h (too old), cart_bought_after, cart_bought_same_time
    # (purchase at or after the cart), cart_recarted (latest cart 10 minutes ago)
    assert found["cart_31m"]["last_cart_at"] == ago(minutes=31)
    assert (found["cart_31m"]["category"], found["cart_31m"]["cart_value"]) == ("shoes", 80.0)
    latest = found["cart_latest_counts"]
    assert (latest["last_cart_at"], latest["category"], latest["cart_value"]) == (
        ago(hours=1), "books", 12.5
    ), "the latest cart, quantity defaulting to 1"
    assert found["cart_future_cart"]["last_cart_at"] == ago(hours=2)
    assert found["cart_future_cart"]["category"] == "shoes"


def test_high_intent_browsers(built):
    found = members(built, "high_intent_browsers")
    assert set(found) == {"browse_3", "browse_at_now", "browse_most", "browse_tie"}
    # out: browse_2 (two views), browse_spread (three categories), browse_one_old (one view
    # 61 minutes ago), browse_hour_edge (one view exactly an hour ago: the window is open there),
    # browse_future (the third view is after now)
    assert (found["browse_3"]["category"], found["browse_3"]["product_views"]) == ("shoes", 3)
    assert found["browse_at_now"]["product_views"] == 3, "a view at exactly now counts"
    assert (found["browse_most"]["category"], found["browse_most"]["product_views"]) == (
        "garden", 4
    ), "the most viewed category"
    assert (found["browse_tie"]["category"], found["browse_tie"]["product_views"]) == (
        "books", 3
    ), "ties go to the alphabetically first category"


def test_new_signups_no_purchase(built):
    found = members(built, "new_signups_no_purchase")
    assert set(found) == {"signup_6d", "signup_7d", "signup_6d_future_buyer"}
    # out: signup_8d (too old), signup_6d_buyer (bought), signup_guest_buyer (bought before
    # signing up), signup_future (signs up after now), signup_record_only (no signup event)
    assert found["signup_6d"]["signed_up_at"] == ago(days=6)
    assert found["signup_7d"]["signed_up_at"] == ago(days=7), "exactly 7 days: bound included"


def test_recent_purchasers(built):
    found = members(built, "recent_purchasers")
    assert set(found) == {
        "recent_2d", "recent_3d", "recent_mixed",
        "cart_bought_after", "cart_bought_before", "cart_bought_same_time", "signup_6d_buyer",
    }
    # out: recent_4d, recent_future, and every older or future purchase above
    two = found["recent_2d"]
    assert (two["last_purchase_at"], two["orders_3d"], two["revenue_3d"]) == (
        ago(days=1), 2, 50.0
    )
    mixed = found["recent_mixed"]
    assert (mixed["orders_3d"], mixed["revenue_3d"]) == (1, 10.0), "only the last 3 days count"
    assert found["recent_3d"]["last_purchase_at"] == ago(days=3), "exactly 3 days: included"


def test_churn_risk(built):
    found = members(built, "churn_risk")
    assert set(found) == {"churn_31d", "churn_future_event", "churn_quiet_browser"}
    # out: churn_29d (a page view 29 days ago), churn_one_purchase, churn_30d (last purchase
    # exactly 30 days ago is not before the window), churn_future_purchase (1 purchase by now)
    assert (found["churn_31d"]["purchases"], found["churn_31d"]["last_seen_at"]) == (
        2, ago(days=31)
    )
    assert found["churn_future_event"]["last_seen_at"] == ago(days=40), "future events ignored"
    assert found["churn_quiet_browser"]["last_seen_at"] == ago(days=31), "any event type counts"


def test_vip_quarterly_is_the_top_five_percent(built):
    with built.connect() as con:
        buyers = con.execute(
            "select count(*) from (select customer_id from staging.stg_events "
            "where event_type = 'purchase' and occurred_at between ? and ? "
            "group by customer_id having sum(order_value) > 0)", [ago(days=90), NOW]
        ).fetchone()[0]
        # the second biggest spender: the regular vip_NN buyer with the highest number
        runner_up = con.execute(
            "select max(customer_id) from raw.customers "
            "where regexp_matches(customer_id, '^vip_[0-9]+$')"
        ).fetchone()[0]
    assert buyers == VIP_BUYERS
    found = members(built, "vip_quarterly")
    assert set(found) == {"vip_whale", runner_up}, "2 of 40 buyers"
    # out: vip_old (91 days ago), vip_future, vip_zero (no revenue), every smaller spender
    whale = found["vip_whale"]
    assert (whale["revenue_90d"], whale["orders_90d"], whale["spend_rank"]) == (6000.0, 2, 1)
    assert found[runner_up]["spend_rank"] == 2


def test_dach_customers(built):
    found = members(built, "dach_customers")
    assert set(found) == {"dach_de", "dach_at", "dach_ch", "dach_lowercase"}
    assert (found["dach_ch"]["country"], found["dach_ch"]["city"]) == ("CH", "Zürich")
    assert found["dach_lowercase"]["country"] == "DE", "country codes are normalised"


def test_segments_are_evaluated_in_dbt_tests_too(built):
    """The build ran every schema test (unique, not_null, accepted_values) and they passed."""
    run = json.loads((built.dbt_target_dir / "run_results.json").read_text())
    tests = [r for r in run["results"] if r["unique_id"].startswith("test.")]
    assert tests and all(r["status"] == "pass" for r in tests)
    assert any("accepted_values" in r["unique_id"] and "events_event_type" in r["unique_id"]
               for r in tests)


# --- real time: the session's now --------------------------------------------------------------

SESSION_NOW = datetime(2020, 1, 1, 12, 0, 0)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scratch, datetime]:
    """Built without the var: views read `segops_now` from the session, else the UTC clock."""
    wall = datetime.now(UTC).replace(tzinfo=None)

    def fill(con: duckdb.DuckDBPyConnection) -> None:
        shop = Shop(con)
        shop.cart("past_cart", SESSION_NOW - timedelta(hours=1))
        shop.cart("wall_cart", wall - timedelta(hours=1))
        # a nightly ranking on the wall clock: 20 buyers, two tied at the top
        shop.event("tie_b", "purchase", wall - timedelta(days=1), order_value=500.0)
        shop.event("tie_a", "purchase", wall - timedelta(days=1), order_value=500.0)
        for k in range(1, 19):
            shop.event(f"buyer_{k:02d}", "purchase", wall - timedelta(days=1),
                       order_value=10.0 * k)

    return scratch_build(tmp_path_factory.mktemp("segments_live"), fill), wall


def test_realtime_view_follows_the_session_variable(live):
    built, _ = live
    at = SESSION_NOW
    assert set(members(built, "cart_abandoners", now=at)) == {"past_cart"}
    assert set(members(built, "cart_abandoners", now=at - timedelta(minutes=31))) == set(), (
        "29 minutes after the cart it is not abandoned yet"
    )
    assert set(members(built, "cart_abandoners", now=at + timedelta(hours=23))) == {
        "past_cart"
    }
    assert set(members(built, "cart_abandoners", now=at + timedelta(hours=24))) == set()
    found = members(built, "cart_abandoners", now=at)
    assert found["past_cart"]["last_cart_at"] == SESSION_NOW - timedelta(hours=1)


def test_realtime_view_without_the_variable_uses_the_utc_clock(live):
    built, _ = live
    assert set(members(built, "cart_abandoners")) == {"wall_cart"}
    with built.connect() as con:
        con.execute(f"set variable segops_now = timestamp '{SESSION_NOW.isoformat(sep=' ')}'")
        assert set(read_members(con, "cart_abandoners")) == {"past_cart"}
        con.execute("reset variable segops_now")
        assert set(read_members(con, "cart_abandoners")) == {"wall_cart"}


def test_unpinned_build_compiles_the_session_variable(live):
    built, _ = live
    manifest = json.loads(built.manifest_path.read_text())
    compiled = manifest["nodes"]["model.segops.cart_abandoners"]["compiled_code"]
    assert "getvariable('segops_now')" in compiled
    assert "now() at time zone 'UTC'" in compiled


def test_vip_ties_are_broken_by_customer_id(live):
    built, _ = live
    assert set(members(built, "vip_quarterly")) == {"tie_a"}, "1 of 20 buyers, tie to tie_a"
