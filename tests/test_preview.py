"""`segops preview`: live reach of shipped and unshipped SQL, read-only, in CLI and Dagster, on
the live state in PostgreSQL and the models in the lake."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import timedelta

import dagster as dg
import psycopg
import pytest

from orchestration.build import build_definitions
from segops.dbt import DbtError
from segops.preview import resolve_target, run_preview
from segops_cli.main import main
from segops_cli.watch import Save, watch
from tests.live_helpers import NOW, lake_rows, started
from tests.shop import add_customer, add_event, ago
from tests.stream_helpers import rows, wait_for

# Not in the project: customers with 4+ events of any kind in the last 2 hours.
BUSY_SQL = """
with recent as (
    select * from {{ ref('stg_events') }}
    where occurred_at > {{ segops_now() }} - interval '2 hours'
      and occurred_at <= {{ segops_now() }}
)
select customer_id, count(*) as recent_events
from recent
group by customer_id
having count(*) >= 4
"""


@pytest.fixture
def shop(live_shop):
    """Five customers; ann and bob browse books hard, cy browses twice, dan buys, eve sleeps."""
    with psycopg.connect(live_shop.postgres_dsn) as con:
        for name in ("ann", "bob", "cy", "dan", "eve"):
            add_customer(con, name, signed_up_at=ago(NOW, days=90))
        for minutes in (50, 40, 30, 20):
            add_event(con, "ann", "product_view", ago(NOW, minutes=minutes), category="books")
        for minutes in (45, 35, 25):
            add_event(con, "bob", "product_view", ago(NOW, minutes=minutes), category="books")
        for minutes in (15, 5):
            add_event(con, "cy", "product_view", ago(NOW, minutes=minutes), category="toys")
        add_event(con, "dan", "purchase", ago(NOW, hours=1), order_value=30.0, order_id="o1")
    with started(live_shop, clock=lambda: NOW):
        pass  # current membership: ann and bob are high-intent browsers
    return live_shop


def footprint(settings) -> tuple[list[tuple], dict[str, int]]:
    """The lake's latest snapshot and the rows in every table of the PostgreSQL database (the
    live state and the lake's catalog): what a write anywhere would change. The snapshot first:
    reading a lake that does not exist yet creates it."""
    snapshot = lake_rows(settings, "select max(snapshot_id) from ducklake_snapshots('warehouse')")
    tables = rows(settings, "select schemaname, tablename from pg_tables "
                            "where schemaname not in ('pg_catalog', 'information_schema')")
    return snapshot, {f"{schema}.{table}": rows(
        settings, f'select count(*) from "{schema}"."{table}"')[0][0] for schema, table in tables}


def test_an_unshipped_sql_file_previews_its_hand_computed_reach(shop, tmp_path):
    path = tmp_path / "busy_shoppers.sql"
    path.write_text(BUSY_SQL)
    before = footprint(shop)

    result = run_preview(shop, resolve_target(shop, str(path), None), NOW)

    # By hand: ann has 4 events in 2 hours; bob 3, cy 2, dan 1, eve 0.
    assert result.name == "busy_shoppers"
    assert (result.reach, result.customers) == (1, 5)
    assert result.share == pytest.approx(0.2)
    assert [customer_id for customer_id, _ in result.sample] == ["ann"]
    assert json.loads(result.sample[0][1]) == {"recent_events": 4}
    assert dict(result.overlap) == {"high_intent_browsers": 1}
    assert result.enters is None, "an unshipped segment has no membership to compare with"
    assert footprint(shop) == before, "preview never writes"


def test_a_shipped_segment_previews_who_would_enter_and_exit(shop):
    with psycopg.connect(shop.postgres_dsn) as con:
        add_event(con, "cy", "product_view", ago(NOW, minutes=1), category="toys")
    target = resolve_target(shop, "high_intent_browsers", None)

    now = run_preview(shop, target, NOW)
    assert (now.reach, now.enters, now.exits) == (3, 1, 0)
    assert now.enter_sample == ["cy"]

    later = run_preview(shop, target, NOW + timedelta(minutes=36))
    # 36 minutes on, three of ann's views and all of bob's have left the hour; cy's have not.
    assert (later.reach, later.enters, later.exits) == (1, 1, 2)
    assert (later.enter_sample, later.exit_sample) == (["cy"], ["ann", "bob"])


def test_previewing_a_shipped_segment_imports_neither_dbt_nor_pandas(shop):
    """Its compiled SQL is in the manifest and its results are printed from DuckDB's rows:
    dbt's imports or pandas' would add a fifth of a second to every call (B6)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "segops_cli", "preview",
                           "high_intent_browsers"], capture_output=True, text=True, check=True)
    assert "high_intent_browsers at" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert not imported & {"pandas", "dbt", "sqlglot"}


def test_broken_sql_gets_dbts_error_with_the_file_and_line(manifest, tmp_path, capsys):
    path = tmp_path / "broken.sql"
    path.write_text("select customer_id\nfrom {{ ref('stg_events' }}\n")
    with pytest.raises(DbtError) as error:
        resolve_target(manifest, str(path), None)
    assert str(path) in str(error.value)
    assert "line 2" in str(error.value)

    with pytest.raises(SystemExit) as exit_:
        main(["preview", str(path)])
    assert exit_.value.code == 1
    err = capsys.readouterr().out
    assert "broken.sql" in err and "Traceback" not in err


def test_the_preview_job_shows_the_result_as_run_metadata(shop):
    job = build_definitions(shop).resolve_job_def("preview_segment")
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"segment_preview": {"config": {
            "segment": "high_intent_browsers", "at": NOW.isoformat()}}}},
    )
    [output] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.step_output_data.metadata
    assert metadata["reach"].value == 2
    table = metadata["preview"].value
    assert "| would enter | 0 |" in table and "| would exit | 0 |" in table
    assert "| ann |" in table and "| bob |" in table


def test_watch_previews_every_save_and_says_who_moved(live_shop, tmp_path):
    with psycopg.connect(live_shop.postgres_dsn) as con:
        for name, views in (("ann", 4), ("bob", 2)):
            for _ in range(views):
                add_event(con, name, "product_view", ago(NOW, minutes=5))
    draft = tmp_path / "keen.sql"
    at_least = ("select customer_id from {{{{ ref('stg_events') }}}} group by customer_id "
                "having count(*) >= {}")
    draft.write_text(at_least.format(3))
    saves: list[Save] = []
    stop = threading.Event()
    worker = threading.Thread(target=watch, kwargs={
        "settings": live_shop, "path": draft, "on_save": saves.append, "stop": stop,
        "on_error": lambda why: saves.append(why)}, daemon=True)
    worker.start()
    try:
        wait_for(lambda: len(saves) == 1)
        draft.write_text(at_least.format(2))  # the analyst loosens the rule and saves
        wait_for(lambda: len(saves) == 2)
    finally:
        stop.set()
        worker.join(timeout=30)
    first, second = saves
    assert first.result.reach == 1 and first.entered is None
    assert (second.result.reach, second.entered, second.left) == (2, {"bob"}, frozenset())
