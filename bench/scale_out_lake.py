"""Prototype for history on DuckLake: the nightly dbt build on a DuckLake with its catalog in
PostgreSQL, against the same build on the DuckDB file, with a reader querying the lake
throughout; and how the size of a history flush's commit costs.

    python -m bench.scale_out_lake [--customers 100000]

The extensions load from their wheels (`segops.extensions`); it starts its own PostgreSQL
(`demo.postgres`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import psycopg
import yaml

from bench.machine import describe_machine
from bench.scale_out import percentiles
from demo.postgres import LocalPostgres
from segops.extensions import extension_directory
from segops.settings import DBT_PROJECT_DIR

FLUSH_SIZES = (1_000, 10_000, 100_000)


def lake_uri(dsn: str, database: str) -> str:
    return "ducklake:postgres:" + dsn.replace("dbname=postgres", f"dbname={database}")


def dbt_build(target: str, profiles: Path, target_path: Path, env: dict) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [Path(sys.executable).parent / "dbt", "build", "--target", target, "--project-dir",
         str(DBT_PROJECT_DIR), "--profiles-dir", str(profiles), "--target-path",
         str(target_path), "--quiet", "--exclude", "test_type:unit"],
        env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
    return time.monotonic() - started


def reader(uri: str, data: str, extensions: str, stop, results) -> None:
    """Reads the lake's membership-like tables without pause; records latencies and errors."""
    con = duckdb.connect(config={"extension_directory": extensions})
    con.execute(f"attach '{uri}' as lake (data_path '{data}', read_only)")
    latencies, errors = [], []
    while not stop.is_set():
        started = time.perf_counter()
        try:
            con.execute("select count(*) from lake.raw.events where customer_id = 'c0000042'"
                        ).fetchall()
            latencies.append(time.perf_counter() - started)
        except duckdb.Error as error:
            errors.append(str(error).splitlines()[0])
    results.put({"reads": len(latencies), "read_ms": percentiles(latencies),
                 "errors": len(errors), "first_error": errors[0] if errors else None})


def flush_costs(uri: str, data: str, extensions: str) -> list[dict]:
    """Append settled events to the lake in commits of several sizes: seconds per commit and
    Parquet files written."""
    con = duckdb.connect(config={"extension_directory": extensions})
    con.execute(f"attach '{uri}' as lake (data_path '{data}')")
    con.execute("create table lake.raw.flushed as select * from lake.raw.events limit 0")
    costs = []
    for size in FLUSH_SIZES:
        files_before = sum(1 for _ in Path(data).rglob("*.parquet"))
        seconds = []
        for commit in range(5):
            started = time.perf_counter()
            con.execute(f"insert into lake.raw.flushed select * from lake.raw.events "
                        f"limit {size} offset {commit * size}")
            seconds.append(time.perf_counter() - started)
        files = sum(1 for _ in Path(data).rglob("*.parquet")) - files_before
        costs.append({"events_per_commit": size, "commit_ms": percentiles(seconds),
                      "events_per_s": round(size / (sum(seconds) / len(seconds))),
                      "parquet_files_per_commit": files / 5})
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out_lake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="segops-lake-"))
    folder.chmod(0o755)  # as root the server runs as `postgres`, which must reach its folder
    try:
        print(json.dumps(measure(folder, args.customers), indent=1, default=str))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(folder: Path, customers: int) -> dict:
    extensions = str(extension_directory())
    warehouse = folder / "warehouse.duckdb"
    env = {**os.environ, "SEGOPS_WAREHOUSE": str(warehouse), "SEGOPS_NOW": "",
           "SEGOPS_DBT_TARGET_DIR": str(folder / "target")}
    subprocess.run([Path(sys.executable).parent / "segops", "generate", "--customers",
                    str(customers)], env=env, check=True, capture_output=True)
    with LocalPostgres(folder / "postgres") as server:
        with psycopg.connect(server.dsn, autocommit=True) as con:
            con.execute("create database lake")
        uri, data = lake_uri(server.dsn, "lake"), str(folder / "lake") + "/"
        con = duckdb.connect(config={"extension_directory": extensions})
        con.execute(f"attach '{warehouse}' as file (read_only)")
        con.execute(f"attach '{uri}' as lake (data_path '{data}')")
        con.execute("create schema lake.raw")
        copied = time.monotonic()
        for (table,) in con.execute("select table_name from duckdb_tables() where "
                                    "database_name = 'file' and schema_name = 'raw'").fetchall():
            con.execute(f"create table lake.raw.{table} as select * from file.raw.{table}")
        copied = time.monotonic() - copied
        events = con.execute("select count(*) from lake.raw.events").fetchone()[0]
        con.close()

        profiles = folder / "profiles"
        profiles.mkdir()
        config = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
        config["segops"]["outputs"]["lake"] = {
            "type": "duckdb", "path": ":memory:", "threads": 1,
            "config_options": {"extension_directory": extensions},
            "attach": [{"path": uri, "alias": "warehouse", "options": {"data_path": data}}],
            "database": "warehouse",
            "plugins": [{"module": "segops.dbt_clock"}],
        }
        (profiles / "profiles.yml").write_text(yaml.safe_dump(config))

        file_seconds = dbt_build("dev", profiles, folder / "target-file", env)
        stop, results = multiprocessing.Event(), multiprocessing.Queue()
        watcher = multiprocessing.Process(target=reader, args=(uri, data, extensions, stop,
                                                               results))
        watcher.start()
        time.sleep(1)  # the reader attached and reading before the build starts
        lake_seconds = dbt_build("lake", profiles, folder / "target-lake", env)
        stop.set()
        read = results.get()
        watcher.join()
        flushes = flush_costs(uri, data, extensions)
    return {
        "machine": describe_machine(), "duckdb": duckdb.__version__,
        "customers": customers, "events": events,
        "copy_raw_to_lake_s": round(copied, 2),
        "dbt_build_file_s": round(file_seconds, 2),
        "dbt_build_lake_s": round(lake_seconds, 2),
        "lake_over_file": round(lake_seconds / file_seconds, 2),
        "reader_during_lake_build": read,
        "flush": flushes,
    }


if __name__ == "__main__":
    main()
