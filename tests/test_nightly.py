"""The nightly job on the lake, executed in process: the live tables copied from PostgreSQL,
dbt build, then membership for every segment in PostgreSQL; its changes leave through the
stream's outbox."""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime, timedelta

import dagster as dg
import psycopg
import pytest

from demo.emulator import free_port
from demo.traffic import event
from orchestration.build import build_definitions
from orchestration.nightly.dbt_runner import prune_run_folders
from orchestration.resources import warehouse_resource
from segops.catalog import Catalog
from segops.dbt import run_dbt
from segops.lake import dbt_environment
from segops.live_membership import apply_found
from segops.live_state import read_live_state
from segops.membership import current_members, members_at
from segops.settings import DBT_PROJECT_DIR, load_settings
from segops_cli import main as cli
from tests.live_helpers import NOW, started
from tests.shop import add_customer, add_event, ago
from tests.stream_helpers import downstream_subscription, incoming, receive, rows, wait_for


@pytest.fixture
def shop(live_shop):
    """Three customers in PostgreSQL, and the clock pinned to NOW."""
    with psycopg.connect(live_shop.postgres_dsn) as con:
        add_customer(con, "berlin", country="DE", signed_up_at=ago(NOW, days=60))
        add_customer(con, "paris", country="FR", signed_up_at=ago(NOW, days=60))
        add_customer(con, "buyer", country="US", signed_up_at=ago(NOW, days=60))
        add_event(con, "buyer", "purchase", ago(NOW, days=1), order_value=80.0, order_id="o1")
    return live_shop


def pin_clock(monkeypatch: pytest.MonkeyPatch, at: datetime) -> None:
    monkeypatch.setenv("SEGOPS_NOW", at.isoformat())


def definitions() -> dg.Definitions:
    settings = load_settings()
    run_dbt(settings, ["parse"])
    return build_definitions(settings)


def run_nightly(defs: dg.Definitions, instance: dg.DagsterInstance | None = None
                ) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("nightly_segments").execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def members(segment: str, at: datetime | None = None) -> list[str]:
    return memberships([segment], at)[segment]


def memberships(segments: list[str], at: datetime | None = None) -> dict[str, list[str]]:
    """Who is in each of `segments` now or at `at`, read as the product reads the live state
    (one reader for them all: attaching PostgreSQL takes a moment)."""
    settings = load_settings()
    with read_live_state(settings.postgres_dsn) as con:
        return {segment: sorted((current_members(con, segment) if at is None
                                 else members_at(con, segment, at))["customer_id"])
                for segment in segments}


def change_rows(sql: str) -> list[tuple]:
    return rows(load_settings(), sql)


def test_definitions_list_the_job_schedule_and_every_segment(shop):
    defs = definitions()
    dg.Definitions.validate_loadable(defs)  # what `dagster dev` checks when it loads them
    schedule = defs.resolve_schedule_def("nightly_segments_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == defs.resolve_job_def("nightly_segments").name
    flush = defs.resolve_schedule_def("flush_events_schedule")
    assert (flush.cron_schedule, flush.job_name) == ("*/5 * * * *", "flush_events")
    assert flush.default_status == dg.DefaultScheduleStatus.RUNNING
    maintenance = defs.resolve_schedule_def("lake_maintenance_schedule")
    assert maintenance.job_name == "lake_maintenance"
    assert maintenance.default_status == dg.DefaultScheduleStatus.RUNNING
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    for segment in ("cart_abandoners", "vip_quarterly", "dach_customers"):
        assert f"segments/{segment}" in keys
        assert f"membership/{segment}" in keys
    assert {"raw/events", "raw/customers", "staging/stg_events"} <= keys
    lineage = graph.get(dg.AssetKey(["membership", "cart_abandoners"])).parent_keys
    assert dg.AssetKey(["segments", "cart_abandoners"]) in lineage
    checked = {check.asset_key for check in graph.asset_check_keys}
    tested = {dg.AssetKey(["marts", "customer_profiles"]), dg.AssetKey(["raw", "events"])}
    assert tested <= checked, "dbt tests are asset checks"
    nightly = defs.resolve_job_def("nightly_segments")
    assert dg.AssetKey(["raw", "events"]) in {
        check.asset_key for check in nightly.asset_layer.asset_graph.asset_check_keys
    }, "the nightly job selects the raw sources' checks its dbt build runs"


def test_only_the_newest_run_folders_of_the_dbt_step_are_kept(tmp_path):
    for age in range(12):
        folder = tmp_path / f"segops_dbt_models-run{age:02d}"
        folder.mkdir()
        (folder / "run_results.json").write_text("{}")
        os.utime(folder, (1_000_000 - age, 1_000_000 - age))  # run00 is the newest
    (tmp_path / "compiled").mkdir()
    prune_run_folders(tmp_path, "segops_dbt_models", keep=9)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "compiled", *(f"segops_dbt_models-run{age:02d}" for age in range(9))
    ]


def test_the_run_s_dbt_build_opens_the_database_the_run_s_steps_share(shop, monkeypatch):
    """The lake is attached once per run: dbt, in the run's process, opens the in-memory
    database the run's steps opened, lake attached, rather than one of its own."""
    for name, value in dbt_environment(shop).items():
        monkeypatch.setenv(name, value)
    with dg.build_resources({"warehouse": warehouse_resource(shop)}) as resources, \
            resources.warehouse.get_connection() as con:
        con.execute("create table memory.main.opened_by_the_run as select 1 as marker")
        shown = run_dbt(shop, ["show", "--inline",
                               "select marker from memory.main.opened_by_the_run"])
    assert shown.result.results[0].agate_table.rows[0][0] == 1


def test_dbt_runs_in_process_at_the_pinned_now_and_reports_every_model_and_test(shop,
                                                                              monkeypatch):
    """SEGOPS_NOW pins dbt's models as well as membership: an event after it is not counted.
    (One test, since each nightly on the lake takes seconds.)"""
    with psycopg.connect(shop.postgres_dsn) as con:
        for n in range(20):  # buyers enough for vip_quarterly's top 5 % to hold someone
            add_event(con, f"buyer-{n}", "purchase", NOW - timedelta(days=1),
                      order_id=f"o-{n}", order_value=10 + n)
        add_event(con, "paris", "purchase", NOW + timedelta(days=1), order_id="o-big",
                  order_value=1_000_000)
    defs = definitions()

    def vip() -> set[str]:
        with psycopg.connect(shop.postgres_dsn) as con:
            return {row[0] for row in con.execute(
                "select customer_id from segops.segment_membership "
                "where segment = 'vip_quarterly'")}

    result = run_nightly(defs)
    assert result.success
    assert vip() and "paris" not in vip(), "the big purchase is a day after the pinned now"

    manifest = json.loads(load_settings().manifest_path.read_text())
    models = {tuple(node["fqn"][1:]) for node in manifest["nodes"].values()
              if node["resource_type"] == "model"}
    built = {tuple(m.asset_key.path)
             for m in result.asset_materializations_for_node("segops_dbt_models")}
    assert built == models - {("marts", "customer_profiles")}, \
        "the segments and what they read; no segment reads the mart"
    checks = {(check.asset_key.to_user_string(), check.passed)
              for check in result.get_asset_check_evaluations()}
    assert ("segments/dach_customers", True) in checks, "dbt's tests arrive as asset checks"
    assert ("raw/events", True) in checks, "so do the tests of its sources"
    unit_tested = {check.asset_key.path[-1]: check.passed
                   for check in result.get_asset_check_evaluations()
                   if check.check_name == "unit_tests"}
    assert unit_tested == dict.fromkeys(Catalog.load(load_settings().manifest_path).segments,
                                        True), "each segment's unit tests are a check of its own"
    run_folders = list(load_settings().dbt_target_dir.glob("segops_dbt_models-*/run_results.json"))
    assert len(run_folders) == 1, "each run keeps dbt's artifacts in a folder of its own"

    pin_clock(monkeypatch, NOW + timedelta(days=2))
    assert run_nightly(defs).success
    assert "paris" in vip()

    one = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey(["segments", "dach_customers"])],
    )
    assert [m.asset_key for m in one.get_asset_materialization_events()] == [
        dg.AssetKey(["segments", "dach_customers"])
    ], "a subset builds only what was selected"


BROKEN_SEGMENTS = {
    "no_customer_id": ("select 'x' as user_id", "nightly"),
    "duplicate_members": (
        "select customer_id from {{ ref('stg_customers') }} "
        "union all select customer_id from {{ ref('stg_customers') }}",
        "nightly",
    ),
    "hourly_refresh": ("select customer_id from {{ ref('stg_customers') }}", "hourly"),
}
# Compiles, and fails in the warehouse: dbt cannot build it, so there is nothing to reconcile.
FAILS_IN_DBT = {
    "fails_in_dbt": (
        "select cast(customer_id || '!' as integer) as customer_id "
        "from {{ ref('stg_customers') }}",
        "nightly",
    ),
    "fails_its_unit_test": (
        "select customer_id from {{ ref('stg_customers') }} where country = 'DE'",
        "nightly",
    ),
}
WRONG_UNIT_TEST = """
unit_tests:
  - name: expects_the_wrong_customer
    model: fails_its_unit_test
    given:
      - input: ref('stg_customers')
        rows:
          - {customer_id: berlin, country: DE}
    expect:
      rows:
        - {customer_id: paris}
"""


def test_a_broken_segment_fails_alone_with_a_message_naming_it(shop, tmp_path, monkeypatch,
                                                               capsys):
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    for name, (sql, refresh) in {**BROKEN_SEGMENTS, **FAILS_IN_DBT}.items():
        (project / "models" / "segments" / f"{name}.sql").write_text(sql + "\n")
        (project / "models" / "segments" / f"{name}.yml").write_text(
            f"models:\n  - name: {name}\n    config:\n      materialized: table\n"
            f"      meta:\n        segment:\n          refresh: {refresh}\n"
        )
    (project / "models" / "segments" / "_wrong_unit_test.yml").write_text(WRONG_UNIT_TEST)
    monkeypatch.setenv("SEGOPS_DBT_PROJECT_DIR", str(project))

    instance = dg.DagsterInstance.ephemeral()
    result = run_nightly(definitions(), instance)

    assert not result.success
    failures = {
        event.step_key: event.step_failure_data.error.message
        for event in result.get_step_failure_events()
    }
    assert set(failures) == {f"membership__{name}" for name in BROKEN_SEGMENTS}
    assert "'no_customer_id' has no customer_id column" in failures["membership__no_customer_id"]
    assert "'duplicate_members' has 3 duplicate" in failures["membership__duplicate_members"]
    assert "'hourly_refresh'" in failures["membership__hourly_refresh"]
    assert "refresh is 'hourly'" in failures["membership__hourly_refresh"]
    assert members("dach_customers") == ["berlin"], "healthy segments still ran"
    skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    assert skipped == {f"membership__{name}" for name in FAILS_IN_DBT}
    unit_tests = {check.asset_key.path[-1]: (check.passed, check.metadata["failed"].data)
                  for check in result.get_asset_check_evaluations()
                  if check.check_name == "unit_tests"}
    assert unit_tests["fails_its_unit_test"] == (False, {"expects_the_wrong_customer": "fail"})
    assert unit_tests["dach_customers"] == (True, {})
    dbt_errors = [entry.user_message for entry in instance.all_logs(result.run_id)
                  if entry.step_key == "segops_dbt_models" and entry.level >= logging.ERROR]
    assert any("fails_in_dbt" in said and "Conversion Error" in said for said in dbt_errors), (
        "dbt's own error, naming the model, is an error of the dbt step")

    with pytest.raises(SystemExit) as exited:
        cli.main(["nightly"])
    assert exited.value.code == 1
    said = " ".join(capsys.readouterr().out.split())
    assert "the nightly job failed (steps: membership__" in said
    assert "membership__no_customer_id" in said
    assert "skipped, since a dbt model they need failed" in said
    assert "membership__fails_in_dbt" in said


def test_the_nightly_changes_reach_downstream_through_the_stream_s_outbox(shop, pubsub):
    """No publish job on PostgreSQL: the consumer holding the outbox lease publishes the batch
    changes with its own, and marks each once Pub/Sub accepted it."""
    live = load_settings()  # the shop's PostgreSQL and this test's Pub/Sub project
    assert run_nightly(definitions()).success
    subscription = downstream_subscription(live)
    with started(live, publish_changes=True) as consumer:
        def all_marked() -> bool:
            consumer.process([])  # takes the outbox lease and hands the backlog to Pub/Sub
            consumer.flush_changes()  # marks what Pub/Sub accepted
            return change_rows("select count(*) from segops.segment_membership_changes "
                               "where published_at is null") == [(0,)]

        wait_for(all_marked)
    stored = change_rows("select change_id, segment, customer_id, published_at is not null "
                         "from segops.segment_membership_changes where source = 'batch'")
    assert stored and all(marked for *_, marked in stored)
    received = receive(subscription, {cid for cid, *_ in stored})
    assert {(b["segment"], b["customer_id"], b["source"]) for b, _ in received
            if b["source"] == "batch"} == {
        (segment, customer, "batch") for _, segment, customer, _ in stored
    }


def test_the_outbox_marks_nothing_published_while_pubsub_is_down(shop, monkeypatch):
    """The job's "fails readably, keeps the changes" on the outbox: batch changes (written as
    the nightly writes them, without building the models) stay unpublished."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    with psycopg.connect(shop.postgres_dsn, autocommit=True) as pg:
        apply_found(pg, [("dach_customers", "berlin", None)], segments=["dach_customers"],
                    customers=None, source="batch", changed_at=NOW)
    with started(load_settings(), publish_changes=True) as consumer:
        consumer.process([])  # takes the outbox lease and hands the change to Pub/Sub
        consumer.flush_changes()  # waits ten seconds; the request's own deadline is thirty
        # still waiting for an answer, or refused once the request's deadline passed
        assert consumer.feed.in_flight or consumer.feed.last_error, "handed to Pub/Sub"
    assert change_rows("select count(*) from segops.segment_membership_changes "
                       "where source = 'batch' and published_at is null") == [(1,)], (
        "nothing is marked published that Pub/Sub did not accept")


def test_point_in_time_reads_equal_what_was_recorded_across_nightly_and_stream(shop, monkeypatch):
    """A scripted day of nightly runs and real-time batches; every moment reads back as it was."""
    defs = definitions()
    consumer_at = [NOW]
    segments = sorted(Catalog.load(shop.manifest_path).segments)
    recorded: list[tuple[datetime, dict[str, list[str]]]] = []

    def record(at: datetime) -> None:
        recorded.append((at, memberships(segments)))

    with started(shop, clock=lambda: consumer_at[0]) as consumer:
        assert run_nightly(defs).success
        record(NOW)
        for step, (customer, kind, props) in enumerate([
            ("paris", "product_view", {"category": "books", "price": 9.0}),
            ("paris", "product_view", {"category": "books", "price": 9.0}),
            ("paris", "product_view", {"category": "books", "price": 9.0}),
            ("berlin", "add_to_cart", {"product_id": "p1", "price": 20.0}),
            ("paris", "purchase", {"order_value": 30.0, "order_id": "o9"}),
        ], start=1):
            consumer_at[0] = NOW + timedelta(minutes=10 * step)
            consumer.process([incoming(event(customer, kind, consumer_at[0], **props))])
            record(consumer_at[0])
        consumer_at[0] = NOW + timedelta(hours=2)
        consumer.process([])  # berlin's cart turns abandoned with time alone
        record(consumer_at[0])

    with psycopg.connect(shop.postgres_dsn) as con:
        con.execute("update raw.customers set country = 'AT' where customer_id = 'paris'")
    pin_clock(monkeypatch, NOW + timedelta(days=1))
    assert run_nightly(defs).success
    record(NOW + timedelta(days=1))

    assert len({json.dumps(snapshot) for _, snapshot in recorded}) >= 5, "membership moved"
    for at, snapshot in recorded:
        assert memberships(segments, at) == snapshot, at
