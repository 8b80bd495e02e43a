"""Customers' traits in real time, kept in PostgreSQL: identify events through the real emulator,
loads of CSV and Parquet files from the command line and from Dagster, and the real-time
segments that read the traits following every change."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import pandas as pd
import psycopg
import pytest

from demo.traffic import event
from orchestration.customers import raw_customers
from orchestration.resources import warehouse_resource
from segops.clock import utc_now
from segops.customers import traits_at
from segops.live_state import read_live_state
from segops_cli.main import main
from tests.live_helpers import started
from tests.projects import project_with_segments, realtime_yml
from tests.shop import add_customer
from tests.stream_helpers import (
    consumer_running,
    incoming,
    members,
    publish_all,
    rows,
    scalar,
    wait_for,
)

DUTCH = "select customer_id, city from {{ ref('stg_customers') }} where country = 'NL'"
ON_PRO_PLAN = "select customer_id from {{ ref('stg_customers') }} where traits ->> 'plan' = 'pro'"
# Whoever did anything in the shop: an identify is a profile update, not shop behaviour.
BEHAVED = "select distinct customer_id from {{ ref('stg_events') }}"


@pytest.fixture
def project(manifest, live_dsn, tmp_path, monkeypatch):
    """Real-time segments on a typed trait, on an extra trait and on any shop event, with the
    live state in this test's PostgreSQL database."""
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    return project_with_segments(tmp_path, monkeypatch, {
        "dutch": (DUTCH, realtime_yml("dutch")),
        "on_pro_plan": (ON_PRO_PLAN, realtime_yml("on_pro_plan")),
        "behaved": (BEHAVED, realtime_yml("behaved")),
    })


def identify(customer: str, at: datetime, **traits) -> dict:
    return event(customer, "identify", at, **traits)


def profile(settings, customer: str) -> tuple | None:
    found = rows(settings, "select email, country, city, signed_up_at, traits "
                           "from raw.customers where customer_id = ?", customer)
    return found[0] if found else None


def traits_then(settings, customer: str, at: datetime) -> dict:
    """The customer's traits at `at`, read from the history as the product reads it."""
    with read_live_state(settings.postgres_dsn) as con:
        return traits_at(con, customer, at)


def test_identify_events_set_traits_and_move_segments_in_the_same_batch(pubsub, project):
    now = utc_now().replace(microsecond=0)

    def stored(count: int):
        return lambda: scalar(project, "select count(*) from raw.events") == count

    with consumer_running(project, publish_changes=False):
        publish_all(project, [
            identify("newcomer", now - timedelta(minutes=5), email="n@example.com",
                     country="nl", city="Utrecht", signed_up_at="2026-01-02T03:04:05+01:00",
                     plan="pro"),
            event("shopper", "page_view", now - timedelta(minutes=5), path="/"),
        ])
        wait_for(stored(2))
        assert profile(project, "newcomer") == (
            "n@example.com", "nl", "Utrecht", datetime(2026, 1, 2, 2, 4, 5), {"plan": "pro"})
        assert set(members(project, "dutch")) == {"newcomer"}
        assert set(members(project, "on_pro_plan")) == {"newcomer"}

        publish_all(project, [
            identify("newcomer", now - timedelta(minutes=1), country="DE", plan="free"),
            # older than what is held: it never overwrites the newer traits
            identify("newcomer", now - timedelta(minutes=3), country="FR",
                     email="old@example.com"),
        ])
        wait_for(stored(4))
    email, country, city, _, extra = profile(project, "newcomer")
    assert (email, country, city, extra) == ("old@example.com", "DE", "Utrecht",
                                             {"plan": "free"})
    assert members(project, "dutch") == {} and members(project, "on_pro_plan") == {}
    then = traits_then(project, "newcomer", now - timedelta(minutes=4))
    assert (then["country"], then["plan"]) == ("nl", "pro"), "the history keeps the traits then"
    assert set(members(project, "behaved")) == {"shopper"}, "an identify is not shop behaviour"


def test_a_generated_customer_keeps_its_profile_before_the_change_as_history(project):
    joined = datetime(2026, 3, 1, 9, 0)
    with psycopg.connect(project.postgres_dsn) as con:
        add_customer(con, "veteran", country="US", signed_up_at=joined)
    with started(project) as consumer:
        consumer.process([incoming(identify("veteran", utc_now(), country="NL"))])
    before = traits_then(project, "veteran", joined)
    assert before["country"] == "US" and before["email"] == "veteran@example.com"
    assert profile(project, "veteran")[1:4] == ("NL", "Somewhere", joined)
    assert set(members(project, "dutch")) == {"veteran"}


CSV = """customer_id,email,country,city,signed_up_at,plan
ann,ann@example.com,NL,Delft,2026-05-01T10:00:00Z,pro
bob,bob@example.com,NL,Gouda,not a time,
,nobody@example.com,NL,,,
ann,ann2@example.com,DE,,,
cid,cid@example.com,DE,,2026-05-03 08:00:00,pro
"""


def test_a_csv_load_applies_the_good_rows_reports_each_bad_one_and_the_stream_follows(
        project, tmp_path, capsys):
    path = tmp_path / "crm.csv"
    path.write_text(CSV)
    with pytest.raises(SystemExit) as exit_code:
        main(["load-customers", str(path)])
    assert exit_code.value.code == 1, "a load with rejected rows says so in its exit code"
    said = capsys.readouterr().out
    assert "crm.csv, line 3: signed_up_at 'not a time' is not a time" in said
    assert "crm.csv, line 4: customer_id is missing" in said
    assert "crm.csv, line 5: customer_id 'ann' is already on line 2" in said
    assert "2 of 5 rows applied, 2 customers changed" in said
    assert profile(project, "ann") == ("ann@example.com", "NL", "Delft",
                                       datetime(2026, 5, 1, 10), {"plan": "pro"})
    assert profile(project, "bob") is None, "a rejected row changes nothing"
    assert profile(project, "cid")[3] == datetime(2026, 5, 3, 8), "no zone means UTC"

    with started(project) as consumer:
        assert set(members(project, "on_pro_plan")) == {"ann", "cid"}
        path.write_text("customer_id,plan\nann,free\ncid,pro\n")
        main(["load-customers", str(path)])
        assert "2 of 2 rows applied, 1 customers changed" in capsys.readouterr().out
        consumer.process([])  # the next batch, with no event: re-evaluates what the load changed
    assert set(members(project, "on_pro_plan")) == {"cid"}
    assert scalar(project, "select count(*) from segops.reevaluate_queue") == 0


def test_the_dagster_asset_loads_a_parquet_file(project, tmp_path):
    path = tmp_path / "crm.parquet"
    pd.DataFrame({"customer_id": ["pia", "quin"], "country": ["NL", None],
                  "signed_up_at": pd.to_datetime(["2026-04-01 12:00", "2026-04-02 12:00"]),
                  "seats": [3, 5]}).to_parquet(path)
    result = dg.materialize(
        [raw_customers],
        resources={"warehouse": warehouse_resource(project)},
        run_config={"ops": {"raw__customers": {"config": {"path": str(path)}}}},
    )
    metadata = result.asset_materializations_for_node("raw__customers")[0].metadata
    assert (metadata["applied"].value, metadata["changed"].value) == (2, 2)
    assert profile(project, "pia")[1:] == ("NL", None, datetime(2026, 4, 1, 12), {"seats": 3})
    assert profile(project, "quin")[1] is None
