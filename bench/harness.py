"""What every figure shares: the sizes of a scale, generated warehouses, the emulator, and the
environment each measurement runs in.

A `Lab` lives in one temporary directory for one run. It generates each synthetic shop once
(anchored at one "now"), compiles the segments' SQL once, starts the Pub/Sub emulator when a
figure first needs it, and hands every figure its own copy of a warehouse and manifest, with
SEGOPS_* variables pointing there while the figure runs.
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

from demo.emulator import PubSubEmulator
from demo.synthetic import generate
from demo.traffic import ShopTraffic, known_customers
from segops.clock import utc_now
from segops.dbt import compile_segments
from segops.settings import Settings, load_settings
from segops.warehouse import connect

WAREHOUSE = "warehouse.duckdb"
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
    """A generated warehouse with its compiled manifest, ready to be copied."""

    directory: Path
    customers: int
    events: int
    now: datetime  # the anchor the history was generated at

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
        self.built: dict[int, Path] = {}  # warehouses the nightly job has run on (B4 → B6)
        self._manifest: Path | None = None
        self._emulator: PubSubEmulator | None = None
        self._emulator_host = emulator  # one already running, else started when first needed
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

    def manifest(self) -> Path:
        """A manifest with every segment's compiled SQL (in-memory target: no warehouse)."""
        if self._manifest is None:
            directory = self.root / "compile"
            with environment(directory):
                settings = load_settings()
                compile_segments(settings)
            self._manifest = settings.manifest_path
        return self._manifest

    def shop(self, customers: int) -> Shop:
        """The synthetic shop of `customers` customers (about ten events each)."""
        if customers not in self.shops:
            directory = self.root / f"shop-{customers}"
            directory.mkdir(parents=True)
            now = utc_now()
            with connect(directory / WAREHOUSE) as con:
                summary = generate(con, customers=customers, now=now)
            print(f"  generated {summary.customers:,} customers / {summary.events:,} events "
                  f"in {summary.seconds:.1f}s", flush=True)
            (directory / TARGET).mkdir()
            shutil.copy(self.manifest(), directory / TARGET / MANIFEST)
            self.shops[customers] = Shop(directory, customers, summary.events, now)
        return self.shops[customers]

    # -- one figure's own copy --------------------------------------------------------------

    @contextlib.contextmanager
    def workspace(
        self, name: str, source: Path, *, pubsub: bool = False, keep: bool = False
    ) -> Iterator[Settings]:
        """A copy of `source` (a warehouse and its target/manifest.json) under `name`, with the
        environment pointing at it; removed afterwards unless `keep`."""
        directory = self.root / name
        (directory / TARGET).mkdir(parents=True)
        shutil.copy(source / WAREHOUSE, directory / WAREHOUSE)
        shutil.copy(source / TARGET / MANIFEST, directory / TARGET / MANIFEST)
        host = self.emulator_host() if pubsub else None
        try:
            with environment(directory, project=f"bench-{name.lower()}-{self.run_id}",
                             emulator=host):
                yield load_settings()
        finally:
            if not keep:
                shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> None:
        if self._emulator is not None:
            self._emulator.stop()


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
    directory: Path, *, project: str = "bench", emulator: str | None = None
) -> contextlib.AbstractContextManager[None]:
    """SEGOPS_* (and dbt's and Dagster's) settings pointing into `directory` meanwhile.

    "Now" is never pinned (figures that need a fixed now pin it themselves), Dagster runs on
    an ephemeral instance, and dagster-dbt writes its target folders here, not in the project.
    """
    return overridden({
        "SEGOPS_WAREHOUSE": str(directory / WAREHOUSE),
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
