"""Customers' traits in real time: identify events through the real emulator, loads of CSV and
Parquet files from the command line and from Dagster, and the real-time segments that read the
traits following every change."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from demo.traffic import event
from orchestration.customers import raw_customers
from orchestration.resources import warehouse_resource
from segops.clock import utc_now
from segops.customers import traits_at
from segops.warehouse import connect
from segops_cli.main import main
from streaming.consumer import Consumer, ConsumerConfig
from tests.projects import project_with_segments, realtime_yml
from tests.shop import add_customer
from tests.stream_helpers import (
    consumer_running,
    incoming,
    members,
    publish_all,
    scalar,
    wait_for,
)

DUTCH = "select customer_id, city from {{ ref('stg_customers') }} where country = 'NL'"
ON_PRO_PLAN = "select customer_id from {{ ref('stg_customers') }} where traits ->> 'plan' = 'pro'"


@pytest.fixture
def project(warehouse, tmp_path, monkeypatch):
    """Real-time segments on a typed trait and on an extra trait."""
    return project_with_segments(tmp_path, monkeypatch, {
        "dutch": (DUTCH, realtime_yml("dutch")),
        "on_pro_plan": (ON_PRO_PLAN, realtime_yml("on_pro_plan")),
    })


def identify(customer: str, at: datetime, **traits) -> dict:
    return event(customer, "identify", at, **traits)


def profile(settings, customer: str) -> tuple:
    with connect(settings.warehouse) as con:
        return con.execute(
            "select email, country, city, signed_up_at, traits::varchar from raw.customers "
            "where customer_id = ?", [customer]).fetchone()


def test_identify_events_set_traits_and_move_segments_in_the_same_batch(pubsub, project):
    now = utc_now().replace(microsecond=0)

    def stored(count: int):
        return lambda: scalar(project, "select count(*) from raw.events") == count

    with consumer_running(project, publish_changes=False):
        publish_all(project, [
            identify("newcomer", now - timedelta(minutes=5), email="n@example.com",
                     country="nl", city="Utrecht", signed_up_at="2026-01-02T03:04:05+01:00",
                     plan="pro"),
        ])
        wait_for(stored(1))
        assert profile(project, "newcomer") == (
            "n@example.com", "nl", "Utrecht", datetime(2026, 1, 2, 2, 4, 5), '{"plan":"pro"}')
        assert set(members(project, "dutch")) == {"newcomer"}
        assert set(members(project, "on_pro_plan")) == {"newcomer"}

        publish_all(project, [
            identify("newcomer", now - timedelta(minutes=1), country="DE", plan="free"),
            # older than what is held: it never overwrites the newer traits
            identify("newcomer", now - timedelta(minutes=3), country="FR",
                     email="old@example.com"),
        ])
        wait_for(stored(3))
    email, country, city, _, extra = profile(project, "newcomer")
    assert (email, country, city, extra) == ("old@example.com", "DE", "Utrecht",
                                             '{"plan":"free"}')
    assert members(project, "dutch") == {} and members(project, "on_pro_plan") == {}
    with connect(project.warehouse) as con:
        then = traits_at(con, "newcomer", now - timedelta(minutes=4))
        events = con.execute("select count(*) from staging.stg_events "
                             "where customer_id = 'newcomer'").fetchone()[0]
    assert (then["country"], then["plan"]) == ("nl", "pro"), "the history keeps the traits then"
    assert events == 0, "an identify is a profile update, not shop behaviour"


def test_a_late_identify_applied_first_gives_the_same_profile(project):
    now = utc_now().replace(microsecond=0)
    newer = identify("either", now - timedelta(minutes=1), country="DE")
    older = identify("either", now - timedelta(minutes=2), country="NL", city="Leiden")
    profiles = []
    for order in ((older, newer), (newer, older)):
        with connect(project.warehouse) as con:
            con.execute("delete from raw.customers where customer_id = 'either'")
            con.execute("delete from raw.customer_traits where customer_id = 'either'")
        consumer = Consumer(project, ConsumerConfig(publish_changes=False))
        consumer.start()
        for body in order:
            fresh_id = f"{body['event_id']}-{len(profiles)}"
            consumer.process([incoming({**body, "event_id": fresh_id})])
        profiles.append(profile(project, "either")[1:3])
    assert profiles == [("DE", "Leiden"), ("DE", "Leiden")]


def test_a_generated_customer_keeps_its_profile_before_the_change_as_history(project):
    joined = datetime(2026, 3, 1, 9, 0)
    with connect(project.warehouse) as con:
        add_customer(con, "veteran", country="US", signed_up_at=joined)
    consumer = Consumer(project, ConsumerConfig(publish_changes=False))
    consumer.start()
    consumer.process([incoming(identify("veteran", utc_now(), country="NL"))])
    with connect(project.warehouse) as con:
        before = traits_at(con, "veteran", joined)
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
                                       datetime(2026, 5, 1, 10), '{"plan":"pro"}')
    assert profile(project, "bob") is None, "a rejected row changes nothing"
    assert profile(project, "cid")[3] == datetime(2026, 5, 3, 8), "no zone means UTC"

    consumer = Consumer(project, ConsumerConfig(publish_changes=False))
    consumer.start()
    assert set(members(project, "on_pro_plan")) == {"ann", "cid"}
    path.write_text("customer_id,plan\nann,free\ncid,pro\n")
    main(["load-customers", str(path)])
    assert "2 of 2 rows applied, 1 customers changed" in capsys.readouterr().out
    consumer.process([])  # the next batch, with no event: re-evaluates what the load changed
    assert set(members(project, "on_pro_plan")) == {"cid"}
    with connect(project.warehouse) as con:
        assert con.execute("select count(*) from segops.reevaluate_queue").fetchone() == (0,)


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
    assert profile(project, "pia")[1:] == ("NL", None, datetime(2026, 4, 1, 12), '{"seats":3}')
    assert profile(project, "quin")[1] is None
