"""Prototype for the move of live state to PostgreSQL: N consumers' micro-batches on one
PostgreSQL, and a reader beside them.

    python -m bench.scale_out [--writers 1,3] [--batches 200] [--history 1000000]

Each writer process commits micro-batches the way a consumer on PostgreSQL would: take an
advisory lock per customer of the batch (sorted, so two writers never deadlock), store the
events (`on conflict do nothing returning`, the deduplication), read those customers' histories
into DuckDB (Arrow), evaluate a windowed segment there, and write the membership changes and
their log, all in one transaction. A reader looks up "is customer X in segment Y" throughout.
It starts its own PostgreSQL (`demo.postgres`) on a free port under a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import time
from datetime import datetime, timedelta

import duckdb
import psycopg
import pyarrow as pa

from bench.machine import describe_machine
from demo.postgres import temporary_postgres

SCHEMA = """
create table events (
    customer_id text not null, event_id text not null, event_type text not null,
    occurred_at timestamp not null, properties jsonb,
    ingested_at timestamp not null default (now() at time zone 'UTC'),
    primary key (customer_id, event_id)
);
create table membership (
    customer_id text not null, segment text not null, entered_at timestamp not null,
    primary key (customer_id, segment)
);
create table membership_changes (
    change_id bigserial, customer_id text not null, segment text not null,
    change text not null, changed_at timestamp not null, primary key (customer_id, change_id)
);
"""
SEGMENT = """
select customer_id from history
where event_type = 'product_view' and occurred_at > $now - interval 1 hour
group by customer_id having count(*) >= 3
"""
NOW = datetime(2026, 6, 1, 12, 0)
CUSTOMERS = 100_000


def load_history(dsn: str, events: int) -> None:
    rng = random.Random(1)
    with psycopg.connect(dsn) as con:
        con.execute(SCHEMA)
        with con.cursor().copy("copy events (customer_id, event_id, event_type, occurred_at) "
                               "from stdin") as copy:
            for number in range(events):
                copy.write_row((f"c{rng.randrange(CUSTOMERS):07d}", f"h{number}",
                                rng.choice(("product_view", "page_view", "add_to_cart")),
                                NOW - timedelta(seconds=rng.randrange(86_400 * 30))))
        con.execute("analyze")


def writer(dsn: str, number: int, batches: int, results: multiprocessing.Queue) -> None:
    rng = random.Random(100 + number)
    engine = duckdb.connect()
    timings = []
    with psycopg.connect(dsn) as con:
        for batch in range(batches):
            customers = sorted({f"c{rng.randrange(CUSTOMERS):07d}" for _ in range(150)})
            rows = [(rng.choice(customers), f"w{number}-{batch}-{i}", "product_view",
                     NOW - timedelta(seconds=rng.randrange(600))) for i in range(300)]
            started = time.perf_counter()
            with con.transaction():
                con.execute("select pg_advisory_xact_lock(hashtext(c)) "
                            "from unnest(%s::text[]) as c order by c", [customers])
                with con.cursor() as cur:
                    cur.executemany(
                        "insert into events (customer_id, event_id, event_type, occurred_at) "
                        "values (%s, %s, %s, %s) on conflict do nothing", rows)
                locked = time.perf_counter()
                history = con.execute(
                    "select customer_id, event_type, occurred_at from events "
                    "where customer_id = any(%s)", [customers]).fetchall()
                table = pa.table(dict(zip(("customer_id", "event_type", "occurred_at"),
                                          map(list, zip(*history, strict=True)), strict=True)))
                fetched = time.perf_counter()
                engine.register("history", table)
                found = {r[0] for r in engine.execute(SEGMENT, {"now": NOW}).fetchall()}
                held = {r[0] for r in con.execute(
                    "select customer_id from membership where segment = 'browsers' "
                    "and customer_id = any(%s)", [customers]).fetchall()}
                enters, exits = sorted(found - held), sorted(held - found)
                con.execute("insert into membership select c, 'browsers', %s "
                            "from unnest(%s::text[]) as c", [NOW, enters])
                con.execute("delete from membership where segment = 'browsers' "
                            "and customer_id = any(%s)", [exits])
                con.execute("insert into membership_changes (customer_id, segment, change, "
                            "changed_at) select c, 'browsers', k, %s from unnest(%s::text[], "
                            "%s::text[]) as t(c, k)",
                            [NOW, enters + exits, ["enter"] * len(enters) + ["exit"] * len(exits)])
                evaluated = time.perf_counter()
            timings.append({"total": time.perf_counter() - started, "store": locked - started,
                            "fetch": fetched - locked, "evaluate": evaluated - fetched})
    results.put(timings)


def reader(dsn: str, stop: multiprocessing.Event, results: multiprocessing.Queue) -> None:
    rng = random.Random(7)
    latencies = []
    with psycopg.connect(dsn, autocommit=True) as con:
        while not stop.is_set():
            started = time.perf_counter()
            con.execute("select 1 from membership where customer_id = %s and segment = %s",
                        [f"c{rng.randrange(CUSTOMERS):07d}", "browsers"]).fetchone()
            latencies.append(time.perf_counter() - started)
    results.put(latencies)


def run(dsn: str, writers: int, batches: int) -> dict:
    results: multiprocessing.Queue = multiprocessing.Queue()
    reads: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    looker = multiprocessing.Process(target=reader, args=(dsn, stop, reads))
    looker.start()
    started = time.perf_counter()
    workers = [multiprocessing.Process(target=writer, args=(dsn, n, batches, results))
               for n in range(writers)]
    for worker in workers:
        worker.start()
    timings = [t for _ in workers for t in results.get()]
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    stop.set()
    lookups = reads.get()
    looker.join()
    return {
        "writers": writers,
        "events_per_second": round(300 * batches * writers / elapsed),
        "batch_ms": percentiles([t["total"] for t in timings]),
        "steps_ms_p50": {step: round(statistics.median(t[step] for t in timings) * 1000, 1)
                         for step in ("store", "fetch", "evaluate")},
        "lookup_ms": percentiles(lookups),
        "lookups": len(lookups),
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {name: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)
            for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", default="1,3")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--history", type=int, default=1_000_000)
    args = parser.parse_args()
    with temporary_postgres("segops-pg-") as server:
        load_history(server.dsn, args.history)
        runs = [run(server.dsn, int(n), args.batches) for n in args.writers.split(",")]
    print(json.dumps({"machine": describe_machine(), "history_events": args.history,
                      "batches_per_writer": args.batches, "runs": runs}, indent=1, default=str))


if __name__ == "__main__":
    main()
