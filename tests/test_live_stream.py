"""The stream on PostgreSQL, through the real emulator: identify events set traits that the
segments read in the same batch, time alone moves a customer (swept by the lease holder), the
change feed reaches downstream in order, a segment is evaluated for every customer once for the
stream, not once per consumer, and the command line and the sensor read PostgreSQL."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from datetime import timedelta

import dagster as dg
import psycopg
import pytest
from rich.console import Console

from demo.story import tell
from demo.traffic import event
from orchestration.realtime import build_realtime_sensor
from orchestration.resources import warehouse_resource
from segops.clock import utc_now
from segops_cli.main import main
from tests.live_helpers import started, stream
from tests.projects import project_with_segments, realtime_yml
from tests.stream_helpers import (
    consumer_running,
    downstream_subscription,
    publish_all,
    realtime_segments,
    receive,
    rows,
    wait_for,
)
from tests.stream_helpers import members as sources_of_members

DUTCH = "select customer_id, city from {{ ref('stg_customers') }} where country = 'NL'"


@pytest.fixture
def project(manifest, pubsub, live_dsn, tmp_path, monkeypatch):
    """The shipped segments plus a real-time one on a trait, kept in PostgreSQL."""
    settings = project_with_segments(tmp_path, monkeypatch, {
        "dutch": (DUTCH, realtime_yml("dutch")),
    })
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)  # for the command line's own settings
    return dataclasses.replace(settings, postgres_dsn=live_dsn)


def members(settings, segment: str) -> set[str]:
    return set(sources_of_members(settings, segment))


def test_traits_and_time_move_customers_and_the_feed_follows_in_order(project):
    start = utc_now().replace(microsecond=0)
    offset = [timedelta(0)]
    downstream = downstream_subscription(project)
    cart = {"product_id": "hom-0001", "category": "home", "price": 10.0, "quantity": 1}

    def stored(count: int):
        return lambda: rows(project, "select count(*) from raw.events")[0][0] == count

    with consumer_running(project, clock=lambda: start + offset[0],
                          tick_seconds=0.1):
        publish_all(project, [
            event("ann", "add_to_cart", start - timedelta(minutes=29), **cart),
            event("bob", "identify", start - timedelta(minutes=5), country="NL",
                  city="Utrecht"),
        ])
        wait_for(stored(2))
        assert rows(project, "select country, city from raw.customers") == [("NL", "Utrecht")]
        assert members(project, "dutch") == {"bob"}, "the trait moved bob in the same batch"
        assert members(project, "cart_abandoners") == set(), "ann's cart is 29 minutes old"

        offset[0] = timedelta(minutes=2)  # no event: only time passes
        wait_for(lambda: members(project, "cart_abandoners") == {"ann"})
        publish_all(project, [
            event("bob", "identify", start + timedelta(minutes=1), country="DE")])
        wait_for(lambda: members(project, "dutch") == set())

    changes = rows(project, "select change_id, customer_id, segment, change "
                            "from segops.segment_membership_changes order by change_id")
    assert [change[1:] for change in changes] == [
        ("bob", "dutch", "enter"), ("ann", "cart_abandoners", "enter"),
        ("bob", "dutch", "exit")]
    received = receive(downstream, {change[0] for change in changes})
    by_key = {key: [body["change"] for body, k in received if k == key] for _, key in received}
    assert by_key == {"bob": ["enter", "exit"], "ann": ["enter"]}, "in order per customer"
    assert rows(project, "select count(*) from segops.segment_membership_changes "
                         "where published_at is null") == [(0,)], "marked once accepted"


def test_a_segment_is_evaluated_for_everyone_once_for_the_stream(project, caplog):
    publish_all(project, [event("ann", "identify", utc_now(), country="NL")])
    caplog.set_level(logging.INFO, logger="streaming.live_consumer")
    with consumer_running(project, publish_changes=False):
        wait_for(lambda: members(project, "dutch") == {"ann"})
    first = [r.message for r in caplog.records if "evaluated for" in r.message]
    assert len(first) == len(rows(project, "select * from segops.realtime_segments")) >= 6

    caplog.clear()
    with psycopg.connect(project.postgres_dsn) as con:
        con.execute("update segops.realtime_segments set definition = 'before the deploy' "
                    "where segment = 'dutch'")
    with consumer_running(project, publish_changes=False) as consumer:
        wait_for(lambda: consumer.segments.evaluator is not None and any(
            "evaluated for" in r.message for r in caplog.records))
    again = [r.message for r in caplog.records if "evaluated for" in r.message]
    assert len(again) == 1 and again[0].startswith("dutch "), again


def test_the_command_line_and_the_sensor_read_postgres_not_the_file(project, capsys):
    stream(project, event("bob", "identify", utc_now(), country="NL", city="Utrecht"))

    main(["members", "dutch", "--format", "json"])
    (member,) = json.loads(capsys.readouterr().out)
    assert (member["customer_id"], member["attributes"]) == ("bob", {"city": "Utrecht"})
    main(["history", "bob"])
    assert "dutch" in capsys.readouterr().out

    sensor = build_realtime_sensor(realtime_segments(project))
    with dg.build_sensor_context(
            resources={"warehouse": warehouse_resource(project)}) as context:
        result = sensor(context)
    reported = {e.asset_key.to_user_string() for e in result.asset_events
                if isinstance(e, dg.AssetMaterialization)}
    checks = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert reported == {"membership/dutch"}
    assert checks and all(check.passed for check in checks), "one's heartbeat is fresh"


def test_a_customers_file_loaded_into_postgres_moves_the_stream_s_segments(project, tmp_path):
    loaded = tmp_path / "customers.csv"
    loaded.write_text("customer_id,country,city\nann,NL,Delft\nbob,FR,Paris\nann,DE,Berlin\n")
    with started(project) as consumer:
        with pytest.raises(SystemExit):  # a rejected row makes the command fail
            main(["load-customers", str(loaded)])
        assert rows(project, "select customer_id, country from raw.customers "
                             "order by 1") == [("ann", "NL"), ("bob", "FR")]
        assert members(project, "dutch") == set(), "not until the stream's next batch"
        consumer.process([])
    assert members(project, "dutch") == {"ann"}
    assert rows(project, "select count(*) from segops.reevaluate_queue") == [(0,)]


def test_a_replay_goes_through_postgres_once_however_often_it_is_run(project, tmp_path, capsys):
    export = tmp_path / "export.ndjson"
    export.write_text("\n".join([
        json.dumps(event("ann", "purchase", utc_now() - timedelta(days=2), order_value=5.0,
                         order_id="o1")),
        "not json at all",
    ]) + "\n")
    for _ in range(2):
        main(["replay", str(export), "--no-nightly"])
        assert rows(project, "select (select count(*) from raw.events), "
                             "(select count(*) from raw.dead_letters), "
                             "(select count(*) from segops.segment_membership_changes)") == [
            (1, 1, 1)]
    assert members(project, "recent_purchasers") == {"ann"}
    assert "1 already stored" in capsys.readouterr().out


def test_the_demo_story_plays_on_postgres(live):
    """`make demo`'s real-time act: every enter and exit it narrates happens, on PostgreSQL."""
    told = io.StringIO()
    assert tell(live, Console(file=told, width=200)), told.getvalue()
    assert "ada → enters cart_abandoners" in told.getvalue()
    with psycopg.connect(live.postgres_dsn) as con:
        assert con.execute("select segment from segops.segment_membership "
                           "where customer_id = 'bob'").fetchall() == [("high_intent_browsers",)]


def test_a_nul_character_is_a_dead_letter_not_a_poisoned_batch(live_shop):
    """PostgreSQL cannot store U+0000 in text or jsonb; one such event must not fail the
    batch it came in, over and over as it is redelivered."""
    good = event("paris", "product_view", utc_now(), category="books", price=9.0)
    poisoned = {**event("rome", "product_view", utc_now(), category="books", price=9.0),
                "properties": {"category": "bo\u0000oks", "price": 9.0}}
    stream(live_shop, good, poisoned)
    with psycopg.connect(live_shop.postgres_dsn) as con:
        assert con.execute("select customer_id from raw.events").fetchall() == [("paris",)]
        [(reason,)] = con.execute("select reason from raw.dead_letters").fetchall()
    assert "NUL" in reason


def test_a_consumer_beats_when_it_starts_before_any_batch(live_shop):
    with started(live_shop):
        pass
    with psycopg.connect(live_shop.postgres_dsn) as con:
        assert con.execute("select consumer_id, batches, failed_segments "
                           "from segops.consumer_heartbeat").fetchall() == [("one", 0, {})]
