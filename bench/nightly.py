"""B4: the nightly rebuild of every segment through Dagster and dbt, against a hand-written script.

On one copy of the big shop, at the fixed "now" it was generated at: the `nightly_segments`
Dagster job as the schedule runs it (the events PostgreSQL holds copied into the lake, dbt build
of staging, marts, segments and their tests there, then membership for every segment in
PostgreSQL), then the hand-written DuckDB script (bench/nightly_baseline.sql) twice, the first
to warm the caches, over the lake's copy of the same events. The job's time is its run, from
start to finish; parsing the dbt project and loading the definitions come before it, as they do
when the code location is deployed, and are reported beside it. The figure is the job's time
over the script's. Before it counts, every segment's members from the script must equal the
members the job recorded, and the script must cover every segment the project has.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
from psycopg.conninfo import conninfo_to_dict

from bench.harness import Lab, Shop, figure, pinned_now
from orchestration.run_now import execute, load_job
from segops.catalog import Catalog
from segops.extensions import attach_postgres
from segops.lake import ALIAS, lake_connection
from segops.live_membership import batch_members
from segops.settings import Settings

FIGURES = ("B4",)
BASELINE_SQL = Path(__file__).with_name("nightly_baseline.sql")
# Dagster's console logger at WARNING: the run's events still happen, they are not printed.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class NightlyRun:
    load_seconds: float  # dbt parse and the Dagster definitions, before the run
    run_seconds: float
    result: dg.ExecuteInProcessResult


def run_nightly(settings: Settings) -> NightlyRun:
    """The nightly job, loaded then run; dbt's output (which dagster-dbt prints) goes to a log."""
    log = settings.dbt_target_dir / "nightly.log"
    # The schedule's runs start in a fresh process; collect what earlier figures left behind
    # before the clock starts, or a collection (and the files it closes) lands in the run.
    gc.collect()
    with open(log, "w") as output, contextlib.redirect_stdout(output):
        started = time.monotonic()
        job = load_job(settings, "nightly_segments")
        loaded = time.monotonic()
        result = execute(job, run_config=QUIET)
        finished = time.monotonic()
    if not result.success:
        failed = [event.step_key for event in result.get_step_failure_events()]
        raise RuntimeError(f"the nightly job failed (steps: {', '.join(failed) or 'none'})")
    return NightlyRun(loaded - started, finished - loaded, result)


@contextlib.contextmanager
def baseline_connection(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB where the script's `raw.*` are the lake's (what the job copied
    there) and its `baseline.*` tables are its own."""
    with lake_connection(settings.postgres_dsn, settings.lake_data_path, read_only=True) as con:
        con.execute("use memory")
        con.execute("create schema raw")
        for table in ("events", "customers"):
            con.execute(f"create view raw.{table} as select * from {ALIAS}.raw.{table}")
        yield con


def run_baseline(con: duckdb.DuckDBPyConnection, now: datetime) -> float:
    """Seconds the hand-written script takes."""
    started = time.monotonic()
    con.execute(f"set variable bench_now = timestamp '{now.isoformat(sep=' ')}'")
    con.execute(BASELINE_SQL.read_text())
    return time.monotonic() - started


def compare(con: duckdb.DuckDBPyConnection, settings: Settings, now: datetime
            ) -> dict[str, int]:
    """Segment sizes; raises unless the script and the job found the same members: a nightly
    segment's membership the job wrote to PostgreSQL, a real-time one's model as the job
    evaluated it (at the same now; its membership is the stream's to keep)."""
    segments = Catalog.load(settings.manifest_path).segments
    tables = sorted(row[0] for row in con.execute(
        "select table_name from information_schema.tables "
        "where table_catalog = 'memory' and table_schema = 'baseline'"
    ).fetchall())
    if tables != sorted(segments):
        raise AssertionError(f"the baseline computes {tables}, the project has {sorted(segments)}")
    attach_postgres(con, settings.postgres_dsn, read_only=True)
    con.execute(f"use {ALIAS}")  # where the models' compiled SQL finds them
    sizes, differences = {}, {}
    for name, segment in sorted(segments.items()):
        script = {row[0] for row in con.execute(
            f'select customer_id from memory.baseline."{name}"').fetchall()}
        if segment.refresh == "realtime":
            job = {customer for _, customer, _ in batch_members(con, segment, now)}
        else:
            job = {row[0] for row in con.execute(
                "select customer_id from live.segops.segment_membership where segment = ?",
                [name]).fetchall()}
        sizes[name] = len(script)
        if script != job:
            differences[name] = (f"script {len(script)}, job {len(job)}, "
                                 f"{len(script ^ job)} differ")
    if differences:
        raise AssertionError(f"the baseline disagrees with the nightly job: {differences}")
    return sizes


def step_seconds(result: dg.ExecuteInProcessResult) -> dict[str, float]:
    return {
        event.step_key: round(event.event_specific_data.duration_ms / 1000, 2)
        for event in result.get_step_success_events()
    }


def dbt_breakdown(settings: Settings) -> dict:
    """Where the dbt build spent its time, from the run_results.json of the dbt step's run."""
    found = sorted(settings.dbt_target_dir.glob("*/run_results.json"),
                   key=lambda path: path.stat().st_mtime)
    if not found:
        return {}
    results = json.loads(found[-1].read_text())["results"]
    by_kind: dict[str, float] = {}
    for result in results:
        kind = result["unique_id"].split(".")[0]
        by_kind[kind] = by_kind.get(kind, 0.0) + result["execution_time"]
    slowest = sorted(results, key=lambda r: -r["execution_time"])[:5]
    return {
        "dbt_seconds_by_kind": {kind: round(s, 2) for kind, s in by_kind.items()},
        "dbt_slowest": {r["unique_id"].split(".", 2)[-1]: round(r["execution_time"], 2)
                        for r in slowest},
    }


def built(lab: Lab, customers: int) -> Shop:
    """The shop after the nightly job ran on it (B4's, or one made now untimed)."""
    if customers not in lab.built:
        shop = lab.shop(customers)
        with lab.workspace(f"built-{customers}", shop, keep=True) as settings, \
                pinned_now(shop.now):
            run_nightly(settings)
        lab.built[customers] = after_the_nightly(shop, settings)
    return lab.built[customers]


def after_the_nightly(shop: Shop, settings: Settings) -> Shop:
    return replace(shop, database=conninfo_to_dict(settings.postgres_dsn)["dbname"],
                   lake=Path(settings.lake_data_path))


def measure(lab: Lab) -> dict[str, dict]:
    shop = lab.shop(lab.scale.history_customers)
    with lab.workspace("nightly", shop, keep=True) as settings, pinned_now(shop.now):
        nightly = run_nightly(settings)
        with baseline_connection(settings) as con:
            warm = run_baseline(con, shop.now)
            script = run_baseline(con, shop.now)
            sizes = compare(con, settings, shop.now)
    lab.built.setdefault(shop.customers, after_the_nightly(shop, settings))
    job = nightly.run_seconds
    ratio = job / script
    print(f"  nightly job {job:.1f}s (after {nightly.load_seconds:.1f}s loading it), "
          f"hand-written SQL {script:.1f}s", flush=True)
    return {
        "B4": figure(
            what=f"nightly rebuild of all segments, {shop.label}, through Dagster + dbt",
            value=round(ratio, 2), unit="x hand-written DuckDB SQL", goal="<= 2", met=ratio <= 2,
            baseline=round(script, 2), baseline_unit="s",
            summary=f"{ratio:.1f}x ({job:.1f} s)",
            nightly_seconds=round(job, 2), load_seconds=round(nightly.load_seconds, 2),
            baseline_warm_up_seconds=round(warm, 2),
            steps_seconds=step_seconds(nightly.result), **dbt_breakdown(settings),
            segment_sizes=sizes, history_customers=shop.customers, history_events=shop.events,
            now=shop.now.isoformat(sep=" "),
        ),
    }
