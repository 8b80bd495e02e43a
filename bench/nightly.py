"""B4: the nightly rebuild of every segment through Dagster and dbt, against a hand-written script
doing the same work.

On one copy of the big shop, at the fixed "now" it was generated at, once the flush schedule's
job has copied the events PostgreSQL holds into the lake (as it does every five minutes): the
`nightly_segments` Dagster job as the schedule runs it (the profiles copied into the lake, dbt
build of staging and segments with their tests there, then membership for every segment in
PostgreSQL), and the hand-written DuckDB script (bench/nightly_baseline.sql) on a copy of the
same warehouse, which computes the segments and keeps membership and its history the same way.
Two nights: the first, when every nightly segment's members enter, and a second with nothing
changed since (run three times, the job and the script in turn; each side's median counts).
The job's time is its run, from start to finish; parsing the dbt project and loading the
definitions come before it, as they do when the code location is deployed, and are reported
beside it. The figure is the job's time over the script's, on the worse night; the
same two nights on a shop of a thousand customers give the fixed cost. Before it counts, the
script must find every segment's members as the job's models do, keep the same membership and
record as many changes, and cover every segment the project has.
"""

from __future__ import annotations

import contextlib
import gc
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.harness import Lab, Shop, figure, pinned_now
from orchestration.run_now import execute, load_job
from segops.catalog import Catalog
from segops.extensions import attach_postgres
from segops.lake import ALIAS, lake_connection
from segops.live_columns import COPIED
from segops.live_membership import evaluate_batch
from segops.settings import Settings

FIGURES = ("B4",)
# The fixed cost: the same two nights on a shop with next to no data.
FIXED_COST_CUSTOMERS = 1000
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


def median_run(runs: list[NightlyRun]) -> NightlyRun:
    """The run of median duration (of an odd number)."""
    return sorted(runs, key=lambda run: run.run_seconds)[len(runs) // 2]


def flush_history(settings: Settings) -> float:
    """Seconds the flush schedule's job takes to copy the events PostgreSQL holds into the lake
    (here the whole history, which a running shop's flush copies five minutes at a time)."""
    started = time.monotonic()
    result = execute(load_job(settings, "flush_events"), run_config=QUIET)
    if not result.success:
        raise RuntimeError("the flush of the events into the lake failed")
    return time.monotonic() - started


@contextlib.contextmanager
def baseline_connection(dsn: str, lake: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB on the script's own copy of the warehouse (`dsn`, a copy of the
    job's database with its lake catalog): `raw.events` is the lake's, `raw.customers` the
    profiles PostgreSQL keeps, `live` the PostgreSQL it keeps membership in, and its
    `baseline.*` tables are its own."""
    with lake_connection(dsn, lake, read_only=True) as con:
        attach_postgres(con, dsn, read_only=False)
        con.execute("use memory")
        con.execute("create schema raw")
        con.execute(f"create view raw.events as select * from {ALIAS}.raw.events")
        con.execute("create view raw.customers as "
                    f"select {', '.join(COPIED['raw.customers'])} from live.raw.customers")
        yield con


def run_baseline(con: duckdb.DuckDBPyConnection, now: datetime) -> float:
    """Seconds the hand-written script takes."""
    started = time.monotonic()
    con.execute(f"set variable bench_now = timestamp '{now.isoformat(sep=' ')}'")
    con.execute(BASELINE_SQL.read_text())
    return time.monotonic() - started


def changes_recorded(dsn: str) -> int:
    """The enters and exits the nightly (or the script) recorded in `dsn`'s history."""
    with psycopg.connect(dsn) as pg:
        return pg.execute("select count(*) from segops.segment_membership_changes "
                          "where source = 'batch'").fetchone()[0]


def members(dsn: str) -> dict[str, set[str]]:
    """Each segment's members as `dsn`'s membership table holds them."""
    with psycopg.connect(dsn) as pg:
        found: dict[str, set[str]] = {}
        for segment, customer in pg.execute(
                "select segment, customer_id from segops.segment_membership"):
            found.setdefault(segment, set()).add(customer)
        return found


def compare(script: duckdb.DuckDBPyConnection, settings: Settings, script_dsn: str,
            now: datetime) -> dict[str, int]:
    """Segment sizes; raises unless the script and the job found the same members: every
    segment's model as the job evaluated it (at the same now) against the script's table, and
    the membership the job kept in PostgreSQL against the script's."""
    segments = Catalog.load(settings.manifest_path).segments
    tables = sorted(row[0] for row in script.execute(
        "select table_name from information_schema.tables "
        "where table_catalog = 'memory' and table_schema = 'baseline'"
    ).fetchall())
    if tables != sorted(segments):
        raise AssertionError(f"the baseline computes {tables}, the project has {sorted(segments)}")
    job_members, script_members = members(settings.postgres_dsn), members(script_dsn)
    sizes, differences = {}, {}
    with lake_connection(settings.postgres_dsn, settings.lake_data_path, read_only=True) as job:
        attach_postgres(job, settings.postgres_dsn, read_only=True)
        for name, segment in sorted(segments.items()):
            found = {row[0] for row in script.execute(
                f'select customer_id from memory.baseline."{name}"').fetchall()}
            evaluate_batch(job, segment, now)
            model = {row[0] for row in job.execute("select customer_id from _found").fetchall()}
            kept = job_members.get(name, set())
            sizes[name] = len(found)
            if found != model:
                differences[name] = (f"script {len(found)}, model {len(model)}, "
                                     f"{len(found ^ model)} differ")
            elif kept != script_members.get(name, set()):
                differences[name] = "the job and the script keep different members"
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
    return replace(shop, database=database_of(settings), lake=Path(settings.lake_data_path))


# A second night changes nothing, so it is run this many times, the job and the script in
# turn, and each side's median is the figure: one run of a few seconds varies by a tenth.
SECOND_NIGHTS = 3


@dataclass(frozen=True)
class Night:
    job: NightlyRun  # the run of median duration
    script_seconds: float  # the median
    changes: int  # enters and exits the night recorded (the job's, equal to the script's)
    dbt: dict  # dbt_breakdown of the job's run
    job_runs: list[float]  # every run's seconds
    script_runs: list[float]

    @property
    def ratio(self) -> float:
        return self.job.run_seconds / self.script_seconds


@dataclass(frozen=True)
class TwoNights:
    shop: Shop
    flush_seconds: float
    nights: tuple[Night, Night]
    sizes: dict[str, int]


def two_nights(lab: Lab, shop: Shop, name: str, *, last_use: bool = False) -> TwoNights:
    """The job and the script, each on its own copy of `shop` once the flush has copied its
    events into the lake, on a first night (every nightly segment's members enter) and a second
    (nothing has changed since; SECOND_NIGHTS of them). The job runs first each night, so both
    read warm files. With `last_use`, the shop's own database goes once the job's copy is made,
    and the script's copy keeps no events in PostgreSQL (it reads the lake's), so three copies
    of a big shop never sit on the disk at once."""
    with lab.workspace(name, shop, keep=True) as settings, pinned_now(shop.now):
        if last_use:
            lab.forget(shop)
        flush_seconds = flush_history(settings)
        script_database = f"{database_of(settings)}_script"
        script_dsn = lab.database(script_database, template=database_of(settings))
        if last_use:
            with psycopg.connect(script_dsn, autocommit=True) as pg:
                pg.execute("truncate raw.events")
        nights = []
        with baseline_connection(script_dsn, settings.lake_data_path) as script:
            for repeats in (1, SECOND_NIGHTS):
                jobs, dbts, seconds = [], [], []
                for _ in range(repeats):
                    jobs.append(run_nightly(settings))
                    dbts.append(dbt_breakdown(settings))
                    seconds.append(run_baseline(script, shop.now))
                changes, by_script = (changes_recorded(settings.postgres_dsn),
                                      changes_recorded(script_dsn))
                if by_script != changes:
                    raise AssertionError(f"the job recorded {changes} changes, the script "
                                         f"{by_script}")
                job = median_run(jobs)
                nights.append(Night(job, statistics.median(seconds),
                                    changes - sum(n.changes for n in nights),
                                    dbts[jobs.index(job)],
                                    [round(run.run_seconds, 2) for run in jobs],
                                    [round(second, 2) for second in seconds]))
            sizes = compare(script, settings, script_dsn, shop.now)
        lab.drop(script_database)
    lab.built.setdefault(shop.customers, after_the_nightly(shop, settings))
    return TwoNights(shop, flush_seconds, (nights[0], nights[1]), sizes)


def database_of(settings: Settings) -> str:
    return conninfo_to_dict(settings.postgres_dsn)["dbname"]


def measure(lab: Lab) -> dict[str, dict]:
    fixed = two_nights(lab, lab.shop(FIXED_COST_CUSTOMERS), "nightly-fixed-cost")
    run = two_nights(lab, lab.shop(lab.scale.history_customers), "nightly")
    return {"B4": nights_figure(run, goal=2.0, fixed_cost={
        label: describe(night) for label, night in zip(("first", "second"), fixed.nights,
                                                       strict=True)})}


def nights_figure(run: TwoNights, *, goal: float, **details: object) -> dict:
    """The job against the script on the worse of the two nights."""
    first, second = run.nights
    worst = max(first.ratio, second.ratio)
    for label, night in (("first", first), ("second", second)):
        print(f"  {label} night: job {night.job.run_seconds:.1f}s, hand-written SQL "
              f"{night.script_seconds:.1f}s, {night.changes:,} changes", flush=True)
    return figure(
        what=f"nightly rebuild of all segments with membership and its history, "
             f"{run.shop.label}, through Dagster + dbt, first and second night",
        value=round(worst, 2), unit="x hand-written DuckDB SQL (the worse night)",
        goal=f"<= {goal:g}", met=worst <= goal,
        baseline=round(first.script_seconds, 2), baseline_unit="s",
        summary=(f"first night {first.ratio:.1f}x ({first.job.run_seconds:.1f} s), "
                 f"second {second.ratio:.1f}x ({second.job.run_seconds:.1f} s)"),
        nights={"first": describe(first), "second": describe(second)},
        flush_seconds=round(run.flush_seconds, 2), segment_sizes=run.sizes,
        history_customers=run.shop.customers, history_events=run.shop.events,
        now=run.shop.now.isoformat(sep=" "), **details,
    )


def describe(night: Night) -> dict:
    return {
        "job_seconds": round(night.job.run_seconds, 2),
        "script_seconds": round(night.script_seconds, 2),
        "ratio": round(night.ratio, 2),
        "changes": night.changes,
        "job_runs_seconds": night.job_runs,
        "script_runs_seconds": night.script_runs,
        "load_seconds": round(night.job.load_seconds, 2),
        "steps_seconds": step_seconds(night.job.result),
        **night.dbt,
    }
