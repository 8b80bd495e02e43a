"""What every figure shares: the sizes of a scale, generated shops, the emulator, PostgreSQL, and
the environment each measurement runs in.

A `Lab` lives in one temporary directory for one run. It starts PostgreSQL and the Pub/Sub
emulator when a figure first needs them, generates each synthetic shop once (anchored at one
"now") into a PostgreSQL database of its own that serves as a template (its real-time segments
evaluated for everyone, as a running stream keeps them), compiles the segments'
SQL once, and hands every figure its own database (a copy of the template, made by PostgreSQL in
seconds), lake and manifest, with SEGOPS_* variables pointing there while the figure runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from demo.emulator import PubSubEmulator
from demo.postgres import LocalPostgres, temporary_postgres
from demo.synthetic import generate_into_postgres
from demo.traffic import ShopTraffic, known_customers
from segops.clock import utc_now
from segops.dbt import compile_segments
from segops.settings import Settings, load_settings
from streaming.live_consumer import LiveConsumer
from streaming.stream_loop import ConsumerConfig

TARGET = "target"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Scale:
    name: str
    # B1, B2, B7: the streaming warehouse and traffic
    stream_customers: int
    throughput_events: int
    latency_seconds: float
    rate: float
    # B3, B4, B5, B6: the big history, and B3's reference with a tenth of its events
    history_customers: int
    reference_customers: int
    # B3
    batch_size: int
    batches: int
    # B5
    exits_per_segment: int
    exit_lead_seconds: float
    exit_spacing_seconds: float
    exit_settle_seconds: float
    # B6
    preview_runs: int
    # B7
    memory_seconds: float
    memory_warmup_seconds: float
    memory_sample_seconds: float


SCALES = {
    "full": Scale(
        name="full",
        stream_customers=20_000, throughput_events=30_000, latency_seconds=60.0, rate=1000.0,
        history_customers=1_000_000, reference_customers=100_000,
        batch_size=1000, batches=20,
        exits_per_segment=10, exit_lead_seconds=10.0, exit_spacing_seconds=2.0,
        exit_settle_seconds=20.0,
        preview_runs=5,
        memory_seconds=600.0, memory_warmup_seconds=60.0, memory_sample_seconds=5.0,
    ),
    # Checks that the harness works and its output is well formed, in CI; not a speed.
    "small": Scale(
        name="small",
        stream_customers=2_000, throughput_events=2_000, latency_seconds=5.0, rate=1000.0,
        history_customers=20_000, reference_customers=2_000,
        batch_size=1000, batches=4,
        exits_per_segment=3, exit_lead_seconds=4.0, exit_spacing_seconds=0.5,
        exit_settle_seconds=4.0,
        preview_runs=3,
        memory_seconds=30.0, memory_warmup_seconds=10.0, memory_sample_seconds=1.0,
    ),
}


@dataclass(frozen=True)
class Shop:
    """A generated shop in a PostgreSQL database that figures copy theirs from; once the
    nightly ran on it, with the lake it built."""

    database: str
    customers: int
    events: int
    now: datetime  # the anchor the history was generated at
    lake: Path | None = None

    @property
    def label(self) -> str:
        return f"{compact(self.customers)} customers / {compact(self.events)} events"


def compact(count: float) -> str:
    """1M, 9.99M, 200k, 950."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:.3g}{suffix}"
    return f"{count:g}"


class Lab:
    def __init__(self, root: Path, scale: Scale, *, emulator: str | None = None):
        self.root = root
        self.scale = scale
        self.shops: dict[int, Shop] = {}
        self.built: dict[int, Shop] = {}  # shops the nightly job has run on (B4 → B5, B6)
        self._manifest: Path | None = None
        self._emulator: PubSubEmulator | None = None
        self._emulator_host = emulator  # one already running, else started when first needed
        self._postgres: LocalPostgres | None = None
        self._stack = contextlib.ExitStack()  # what the run started, stopped by `close`
        self.run_id = uuid.uuid4().hex[:8]  # Pub/Sub projects of their own on a shared emulator

    # -- the pieces, each made once per run ------------------------------------------------

    def emulator_host(self) -> str:
        if self._emulator_host is not None:
            return self._emulator_host
        if self._emulator is None:
            emulator = PubSubEmulator()
            emulator.start()
            self._emulator = emulator
        return self._emulator.host

    def postgres(self) -> LocalPostgres:
        """The project's own PostgreSQL for this run."""
        if self._postgres is None:
            self._postgres = self._stack.enter_context(
                temporary_postgres("segops-bench-postgres-"))
        return self._postgres

    def servers(self) -> dict[str, int]:
        """The root process of each server this run started (an emulator given by --emulator
        is not one), for CoresUsed."""
        started = {"postgres": self._postgres, "emulator": self._emulator}
        return {name: server.process.pid for name, server in started.items()
                if server is not None and server.process is not None}

    def database(self, name: str, *, template: str | None = None) -> str:
        """A new database (a copy of `template`, without another session on it); its DSN."""
        server = self.postgres()
        with psycopg.connect(server.dsn, autocommit=True) as con:
            if template:
                con.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                            "where datname = %s", [template])
            con.execute(f"create database {name}" + (f" template {template}" if template else ""))
        return database_dsn(server.dsn, name)

    def forget(self, shop: Shop) -> None:
        """Drop `shop`'s database, which figures copy theirs from, for the disk it takes."""
        self.drop(shop.database)
        del self.shops[shop.customers]

    def drop(self, name: str) -> None:
        with psycopg.connect(self.postgres().dsn, autocommit=True) as con:
            con.execute(f"drop database if exists {name} with (force)")

    def manifest(self) -> Path:
        """A manifest with every segment's compiled SQL (in-memory target: no database)."""
        if self._manifest is None:
            directory = self.root / "compile"
            with environment(directory):
                settings = load_settings()
                compile_segments(settings)
            self._manifest = settings.manifest_path
        return self._manifest

    def shop(self, customers: int, *, settle: bool = True) -> Shop:
        """The synthetic shop of `customers` customers (about ten events each); unless not to
        `settle`, with its real-time segments evaluated for everyone."""
        if customers not in self.shops:
            database = f"shop_{customers}"
            now = utc_now()
            dsn = self.database(database)
            summary = generate_into_postgres(dsn, customers=customers, now=now)
            print(f"  generated {summary.customers:,} customers / {summary.events:,} events "
                  f"in {summary.seconds:.1f}s", flush=True)
            if settle:
                print(f"  every real-time segment evaluated for everyone in "
                      f"{self._settle(database, dsn):.1f}s", flush=True)
            self.shops[customers] = Shop(database, customers, summary.events, now)
        return self.shops[customers]

    def _settle(self, name: str, dsn: str) -> float:
        """Bring a generated shop to where a running stream keeps it: every real-time segment
        evaluated for every customer (a consumer's first pass, here in one go) and the changes
        that recorded delivered. The figures measure the stream from there, not that pass."""
        started = time.monotonic()
        directory = self.root / f"settle-{name}"
        (directory / TARGET).mkdir(parents=True)
        shutil.copy(self.manifest(), directory / TARGET / MANIFEST)
        with environment(directory, dsn=dsn, lake=directory / "lake"):
            consumer = LiveConsumer(load_settings(), ConsumerConfig(publish_changes=False))
            with consumer.session():
                consumer.start()
                consumer.catch_up()
                _delivered(consumer.pg)
        shutil.rmtree(directory)
        return time.monotonic() - started

    # -- one figure's own copy --------------------------------------------------------------

    @contextlib.contextmanager
    def workspace(
        self, name: str, shop: Shop, *, pubsub: bool = False, keep: bool = False
    ) -> Iterator[Settings]:
        """A database copied from `shop`'s, the manifest, and a lake of its own (or, for a
        built shop, the lake its nightly built, read by the copy's catalog), under `name`, with
        the environment pointing at them; removed afterwards unless `keep`."""
        directory = self.root / name
        (directory / TARGET).mkdir(parents=True)
        shutil.copy(self.manifest(), directory / TARGET / MANIFEST)
        database = f"figure_{name.lower().replace('-', '_')}"
        dsn = self.database(database, template=shop.database)
        host = self.emulator_host() if pubsub else None
        try:
            with environment(directory, dsn=dsn, lake=shop.lake or directory / "lake",
                             project=f"bench-{name.lower()}-{self.run_id}", emulator=host):
                yield load_settings()
        finally:
            if not keep:
                self.drop(database)
                shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> None:
        if self._emulator is not None:
            self._emulator.stop()
        self._stack.close()


def swept_to_now(settings: Settings) -> int:
    """Bring a copy of a settled shop to where a running stream keeps it now: the time sweep run
    up to now and every customer it found evaluated, the changes delivered. A batch takes at
    most a thousand swept customers and queues the rest, so minutes after a shop of a million
    was settled the catch-up spans many batches, which a figure would otherwise time as its
    own. The batches it took."""
    consumer = LiveConsumer(settings, ConsumerConfig(publish_changes=False))
    with consumer.session():
        consumer.start()
        batches = 0
        while True:
            consumer.process([])
            batches += 1
            if not consumer.pg.execute("select exists (select from segops.reevaluate_queue)"
                                       ).fetchone()[0]:
                break
        _delivered(consumer.pg)
    return batches


def _delivered(pg: psycopg.Connection) -> None:
    """Every change recorded so far marked published, as a running stream's feed would have:
    a figure times its own changes, not the backlog of the shop's making."""
    pg.execute("update segops.segment_membership_changes set published_at = now() "
               "where published_at is null")


def database_dsn(dsn: str, database: str) -> str:
    return dsn.replace("dbname=postgres", f"dbname={database}")


@contextlib.contextmanager
def overridden(values: dict[str, str | None]) -> Iterator[None]:
    """These environment variables meanwhile (None unsets one), restored afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def environment(
    directory: Path, *, dsn: str | None = None, lake: Path | None = None,
    project: str = "bench", emulator: str | None = None,
) -> contextlib.AbstractContextManager[None]:
    """SEGOPS_* (and dbt's and Dagster's) settings pointing into `directory` and at the
    database `dsn` meanwhile.

    "Now" is never pinned (figures that need a fixed now pin it themselves), Dagster runs on
    an ephemeral instance, and dagster-dbt writes its target folders here, not in the project.
    """
    return overridden({
        "SEGOPS_POSTGRES_DSN": dsn,
        "SEGOPS_LAKE_DATA_PATH": f"{lake}/" if lake else None,
        "SEGOPS_DBT_TARGET_DIR": str(directory / TARGET),
        "DBT_TARGET_PATH": str(directory / TARGET),
        "SEGOPS_PROJECT": project,
        "SEGOPS_NOW": None,
        "DAGSTER_HOME": None,
        "PUBSUB_EMULATOR_HOST": emulator,
    })


def pinned_now(moment: datetime) -> contextlib.AbstractContextManager[None]:
    """SEGOPS_NOW = `moment` for every path (dbt, Dagster, membership) meanwhile."""
    return overridden({"SEGOPS_NOW": moment.isoformat(sep=" ")})


def traffic(customers: int, seed: int) -> ShopTraffic:
    """Live shop traffic for the generated shop's customers, stamped with the real clock."""
    return ShopTraffic(known_customers(customers), seed=seed, clock=utc_now)


def wait_for(condition, timeout: float, every: float = 0.05) -> bool:
    """Poll `condition` every `every` seconds until it holds (True) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def median_steps_ms(laps: list[dict[str, float]]) -> dict[str, float]:
    """Median milliseconds of each step over many batches (BatchOutcome.steps)."""
    names = dict.fromkeys(name for lap in laps for name in lap)
    return {name: round(statistics.median(lap[name] for lap in laps if name in lap) * 1000, 1)
            for name in names}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0 < q < 100) of `values`, interpolated."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]


def figure(
    *,
    what: str,
    value: float | None,
    unit: str,
    goal: str,
    met: bool,
    baseline: float | None,
    baseline_unit: str | None = None,
    summary: str | None = None,
    **details: object,
) -> dict:
    """One figure as latest.json records it; `summary` is what latest.md shows as its value."""
    return {
        "what": what,
        "value": value,
        "unit": unit,
        "goal": goal,
        "met": bool(met),
        "baseline": baseline,
        "baseline_unit": baseline_unit,
        "summary": summary,
        **details,
    }
