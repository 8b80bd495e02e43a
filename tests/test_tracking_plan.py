"""The tracking plan: read with every problem named by its line, applied by policy to unplanned
and invalid events, picked up live by a running consumer, reported by `segops events` and in
Dagster from PostgreSQL, and a shop's own event type usable in a segment without a code
change."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from demo.traffic import event
from orchestration.events import TRACKING_PLAN, event_types_sensor
from orchestration.resources import warehouse_resource
from segops.clock import utc_now
from segops.event_report import last_day_counts
from segops.events import Event
from segops.settings import PROJECT_ROOT
from segops.tracking_plan import PlanError, load_plan
from segops_cli.main import main
from streaming.validation import Rejected, validate
from tests.live_helpers import started
from tests.projects import project_with_segments, realtime_yml
from tests.stream_helpers import consume_until, incoming, members, publish_all, scalar

NOW = datetime(2026, 6, 1, 12, 0)
SHIPPED = (PROJECT_ROOT / "tracking_plan.yml").read_text()
SUBSCRIPTIONS = """
  subscription_started:
    description: A customer starts a paid plan.
    properties:
      plan: {type: string, required: true, values: [free, pro]}
      seats: {type: integer}
"""


def write_plan(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def body(event_type: str, **properties) -> bytes:
    return json.dumps({"event_id": "e1", "customer_id": "c1", "event_type": event_type,
                       "occurred_at": "2026-06-01T11:00:00Z", "properties": properties}).encode()


@pytest.mark.parametrize(("edit", "line", "says"), [
    (lambda t: t.replace("{type: string}", "{type: strng}", 1), 18, "expected one of string"),
    (lambda t: t.replace("violations: block", "violations: maybe"), 12, "violations is 'maybe'"),
    (lambda t: t.replace("    description: A visit begins.", "    descripton: x"), 21,
     "unknown key 'descripton'"),
    (lambda t: t.replace("      path: {type: string}", "      path: {type: string"), 29,
     "not valid YAML"),
    (lambda t: t.replace("price: {type: number}\n  add", "price: {required: true}\n  add"),
     34, "has no type"),
])
def test_a_bad_plan_is_refused_with_its_line(tmp_path, edit, line, says):
    path = write_plan(tmp_path / "plan.yml", edit(SHIPPED))
    with pytest.raises(PlanError) as error:
        load_plan(path)
    assert f"plan.yml, line {line}" in str(error.value) and says in str(error.value)


def test_policies_decide_what_happens_to_unplanned_and_invalid_events(tmp_path):
    plan = load_plan()  # as shipped: unplanned allowed, violations blocked
    refund = validate(body("refund", amount=5), NOW, plan)
    assert isinstance(refund, Event)
    assert refund.violations == (("unplanned_event", "unplanned event_type 'refund'"),)
    assert isinstance(validate(body("purchase", order_value="12"), NOW, plan), Rejected)

    strict = load_plan(write_plan(tmp_path / "strict.yml", SHIPPED.replace(
        "unplanned_events: allow", "unplanned_events: block").replace(
        "  purchase:\n", "  purchase:\n    violations: allow\n")))
    assert validate(body("refund"), NOW, strict).reason == "unplanned event_type 'refund'"
    lenient = validate(body("purchase", order_value="12", order_id=7), NOW, strict)
    assert {kind for kind, _ in lenient.violations} == {"wrong_type"}
    assert len(lenient.violations) == 2, "every violation is recorded, not only the first"
    malformed = validate(body("purchase", order_value=1) + b"x", NOW, strict)
    assert isinstance(malformed, Rejected), "a malformed message is always dead-lettered"


PRO_SUBSCRIBERS = """
select distinct customer_id from {{ ref('stg_events') }}
where event_type = 'subscription_started' and (properties ->> 'plan') = 'pro'
"""


@pytest.fixture
def shop_plan(pubsub, manifest, live_dsn, tmp_path, monkeypatch):
    """The shipped plan plus a shop's own event type, and a segment on its property, with the
    live state in this test's PostgreSQL database."""
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    path = write_plan(tmp_path / "tracking_plan.yml", SHIPPED + SUBSCRIPTIONS)
    monkeypatch.setenv("SEGOPS_TRACKING_PLAN", str(path))
    settings = project_with_segments(tmp_path, monkeypatch, {
        "pro_subscribers": (PRO_SUBSCRIBERS, realtime_yml("pro_subscribers"))})
    return settings, path


def test_a_custom_event_moves_a_customer_and_what_arrives_is_reported(shop_plan, capsys):
    settings, _ = shop_plan
    now = utc_now()
    publish_all(settings, [
        event("sam", "subscription_started", now, plan="pro", seats=3),
        event("sam", "refund", now, amount=12.5),  # not in the plan: stored, recorded
        event("tim", "subscription_started", now, plan="gold"),  # a value the plan refuses
    ])
    consume_until(settings, lambda: scalar(settings, "select count(*) from raw.events") == 2
                  and scalar(settings, "select count(*) from raw.dead_letters") == 1,
                  publish_changes=False)
    assert set(members(settings, "pro_subscribers")) == {"sam"}
    assert "not one of free, pro" in scalar(settings, "select reason from raw.dead_letters")
    assert scalar(settings, "select kind from raw.event_violations "
                            "where event_type = 'refund'") == "unplanned_event"

    main(["events", "--json"])
    seen = {row["event_type"]: row for row in json.loads(capsys.readouterr().out)}
    assert (seen["subscription_started"]["planned"], seen["subscription_started"]["last_hour"]
            ) == (True, 1)
    assert (seen["refund"]["planned"], seen["refund"]["violations"]) == (
        False, {"unplanned_event": 1})
    assert seen["email_open"]["last_day"] == 0, "planned types show even before they arrive"

    with dg.build_sensor_context(
            resources={"warehouse": warehouse_resource(settings)}) as context:
        observation, check = event_types_sensor(context).asset_events
    assert observation.metadata["last_hour/subscription_started"].value == 1
    assert (check.check_name, check.passed) == (TRACKING_PLAN, False)
    assert "1 unplanned event types" in check.description


def test_a_running_consumer_picks_up_a_changed_plan_and_survives_a_bad_one(shop_plan, caplog):
    settings, path = shop_plan
    caplog.set_level(logging.INFO, logger="streaming")
    now = utc_now()
    with started(settings) as consumer:
        assert consumer.process([incoming(event("una", "refund", now))]).stored == 1

        write_plan(path, SHIPPED.replace("unplanned_events: allow", "unplanned_events: block")
                   + SUBSCRIPTIONS)
        consumer.maintain()
        assert "tracking plan changed: unplanned_events allow -> block" in caplog.text
        assert consumer.process([incoming(event("una", "refund", now))]).dead_lettered == 1

        write_plan(path, SHIPPED.replace("{type: string}", "{type: strng}", 1))
        consumer.maintain()
        consumer.maintain()
        refusals = [r for r in caplog.records if "the tracking plan in force stays" in r.message]
        assert len(refusals) == 1 and "line 18" in refusals[0].message
        outcome = consumer.process([
            incoming(event("una", "refund", now)),
            incoming(event("una", "subscription_started", now, plan="pro"))])
    assert (outcome.stored, outcome.dead_lettered) == (1, 1), "the plan in force stayed"


def test_the_last_day_is_counted_from_the_index_on_the_time_alone(live_dsn):
    """The check and the sensor read the last day's events per type without visiting the
    table: at hundreds of millions of events, the day's rows lie anywhere in it."""
    with psycopg.connect(live_dsn, autocommit=True) as pg:
        pg.execute("insert into raw.events (customer_id, event_id, event_type, occurred_at) "
                   "select 'c' || n %% 100, 'e' || n, 'page_view', %s - n * interval '1 minute' "
                   "from generate_series(1, 5000) as n", [NOW])
        pg.execute("vacuum analyze raw.events")
        pg.execute("set enable_seqscan = off")  # a table this small would be read whole
        (plan,) = pg.execute("explain (format json) " + last_day_counts(NOW)).fetchone()
    scans = {node["Node Type"] for node in plan_nodes(plan[0]["Plan"])}
    assert "Index Only Scan" in scans and not scans & {"Index Scan", "Bitmap Heap Scan"}, scans


def plan_nodes(node: dict) -> list[dict]:
    return [node, *(child for sub in node.get("Plans", []) for child in plan_nodes(sub))]
