"""B7: the consumer's resident memory stays flat over a long run at a steady rate.

`segops stream` runs as its own process on the streaming shop (in PostgreSQL) and the emulator
while this process publishes live shop traffic at the B2 rate (10 minutes at full scale). Its
resident set (VmRSS in /proc/<pid>/status) is sampled every few seconds. The figure is the growth
of the last minute of traffic over the minute after the warm-up (the first minute), each the
median of its samples, so one allocation spike does not decide it. Beside it, the resident part
of glibc's main heap (the `[heap]` mapping in /proc/<pid>/smaps), where what DuckDB's C++ and
libpq allocate with malloc lives, with Python's larger objects; DuckDB's tables and buffers live
in its own allocator's mappings and Python's small objects in its own arenas, so the heap's
share of a growth tells the engines' bookkeeping from data kept. Both windows lie inside the
traffic: once it stops, the consumer's memory falls, which says nothing about a consumer that
never idles. Afterwards the consumer must have stored every event and, on SIGTERM, drain and
exit 0.
"""

from __future__ import annotations

import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from bench.harness import Lab, Scale, figure, traffic, wait_for
from demo.producer import publish
from demo.shop import CATEGORIES
from demo.traffic import event
from segops.clock import utc_now
from segops.pubsub import ensure_pubsub

FIGURES = ("B7", "B7h")
GOAL_GROWTH = 0.10
# B7h: one customer at 35 events/s, about a thirtieth of the traffic, and at most twice the
# memory and the per-batch evaluation time at the end of the run as at its start.
HOT_CUSTOMER = "bot-0001"
HOT_EVENTS_PER_SECOND = 35
GOAL_HOT_GROWTH = 2.0
# `segops stream --verbose`: one line per committed batch, with where its time went
BATCH_LINE = re.compile(
    r"(?P<at>\S+ \S+) DEBUG committed batch: .* evaluate (?P<evaluate>[\d.]+) ms")


def resident_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def heap_kib(pid: int) -> int | None:
    """The resident KiB of the process's `[heap]` mapping: glibc's main malloc arena."""
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            in_heap = False
            for line in smaps:
                if not line[0].isupper():  # a mapping's header: address range, …, path
                    in_heap = line.rstrip().endswith("[heap]")
                elif in_heap and line.startswith("Rss:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return 0  # no heap mapped yet


class Sampler(threading.Thread):
    """(seconds since start, KiB) of the process's resident set, and of its glibc heap, every
    `every` seconds."""

    def __init__(self, pid: int, every: float):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self.heap_samples: list[tuple[float, int]] = []
        self.started = time.monotonic()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            at = time.monotonic() - self.started
            kib, heap = resident_kib(self.pid), heap_kib(self.pid)
            if kib is not None and heap is not None:
                self.samples.append((at, kib))
                self.heap_samples.append((at, heap))
            self.done.wait(self.every)


def stored_events(settings) -> int:
    with psycopg.connect(settings.postgres_dsn) as con:
        return con.execute("select count(*) from raw.events").fetchone()[0]


@dataclass(frozen=True)
class ConsumerRun:
    """A `segops stream` process's memory and batches over a run of traffic."""

    samples: list[tuple[float, int]]  # (seconds into the traffic, KiB)
    heap_samples: list[tuple[float, int]]  # (seconds into the traffic, KiB of glibc's heap)
    evaluations: list[tuple[float, float]]  # (seconds into the traffic, a batch's evaluate ms)
    traffic_seconds: float
    published: int
    achieved_rate: float
    stored: int
    drained: bool
    exit_code: int
    history_customers: int
    history_events: int


def run_consumer(lab: Lab, name: str, events: Iterator[dict], rate: float) -> ConsumerRun:
    """`segops stream --verbose` on its own copy of the streaming shop while `events` are
    published at `rate` for the scale's memory run; its resident set sampled, and every batch's
    evaluation time read from its log."""
    scale = lab.scale
    shop = lab.shop(scale.stream_customers)
    with lab.workspace(name, shop, pubsub=True) as settings:
        ensure_pubsub(settings)
        log = settings.dbt_target_dir.parent / "stream.log"
        with open(log, "w") as output:
            consumer = subprocess.Popen(
                [sys.executable, "-m", "segops_cli", "--verbose", "stream"],
                stdout=output, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1],
            )
        try:
            sampler = Sampler(consumer.pid, scale.memory_sample_seconds)
            sampler.start()
            traffic_started = time.monotonic() - sampler.started
            wall_started = datetime.now()
            report = publish(settings, events, rate=rate, duration=scale.memory_seconds)
            traffic_ended = time.monotonic() - sampler.started
            sampler.done.set()
            sampler.join()
            if consumer.poll() is not None:
                raise RuntimeError(f"segops stream exited early:\n{tail(log)}")
            expected = shop.events + report.published
            drained = wait_for(lambda: stored_events(settings) >= expected, timeout=120,
                               every=2.0)
            stored = stored_events(settings) - shop.events
        finally:
            consumer.send_signal(signal.SIGTERM)
            try:
                code = consumer.wait(timeout=60)
            except subprocess.TimeoutExpired:
                consumer.kill()
                code = consumer.wait()
        if code != 0:
            raise RuntimeError(f"segops stream exited {code} on SIGTERM:\n{tail(log)}")
        evaluations = batch_evaluations(log, wall_started)
    return ConsumerRun(
        samples=[(t - traffic_started, kib) for t, kib in sampler.samples],
        heap_samples=[(t - traffic_started, kib) for t, kib in sampler.heap_samples],
        evaluations=evaluations, traffic_seconds=traffic_ended - traffic_started,
        published=report.published, achieved_rate=report.rate, stored=stored,
        drained=drained, exit_code=code, history_customers=shop.customers,
        history_events=shop.events)


def batch_evaluations(log: Path, started: datetime) -> list[tuple[float, float]]:
    """(seconds after `started`, evaluate ms) of every batch the consumer's verbose log lists."""
    found = []
    for line in log.read_text().splitlines():
        match = BATCH_LINE.match(line)
        if match:
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f")
            found.append(((at - started).total_seconds(), float(match["evaluate"])))
    return found


@dataclass(frozen=True)
class Windows:
    """The minute after the warm-up and the last minute of the traffic (shorter if the run
    is), each summarised by its median so one spike does not decide it."""

    warm_up: float
    window: float
    end: float

    @classmethod
    def of(cls, run: ConsumerRun, warm_up: float) -> Windows:
        end = run.traffic_seconds
        return cls(warm_up, min(warm_up, (end - warm_up) / 2), end)

    def first(self, samples: list[tuple[float, float]]) -> float:
        return window_median(samples, self.warm_up, self.warm_up + self.window)

    def last(self, samples: list[tuple[float, float]]) -> float:
        return window_median(samples, self.end - self.window, self.end)


def hot_customer(events: Iterator[dict], share: float) -> Iterator[dict]:
    """`events` with a bot-like customer mixed in as `share` of all: a product view of one
    category after another, around the clock, as a scraper or a stuck client sends them."""
    owed, views = 0.0, 0
    for item in events:
        owed += share
        while owed >= 1:
            owed -= 1
            views += 1
            yield event(HOT_CUSTOMER, "product_view", utc_now(), product_id=f"p{views % 500:04d}",
                        category=CATEGORIES[views % len(CATEGORIES)], price=19.99)
        yield item


def measure(lab: Lab) -> dict[str, dict]:
    scale = lab.scale
    plain = run_consumer(lab, "memory", iter(traffic(scale.stream_customers, 4)), scale.rate)
    hot_rate = scale.rate + HOT_EVENTS_PER_SECOND
    hot = run_consumer(lab, "memory-hot",
                       hot_customer(iter(traffic(scale.stream_customers, 4)),
                                    HOT_EVENTS_PER_SECOND / hot_rate), hot_rate)
    return {"B7": memory_figure(plain, scale), "B7h": hot_figure(hot, scale)}


def memory_figure(run: ConsumerRun, scale: Scale) -> dict:
    windows = Windows.of(run, scale.memory_warmup_seconds)
    first, last = windows.first(run.samples), windows.last(run.samples)
    growth = last / first - 1
    peak = max(kib for t, kib in run.samples if 0 <= t <= windows.end)
    heap_first, heap_last = windows.first(run.heap_samples), windows.last(run.heap_samples)
    print(f"  RSS {first / 1024:,.0f} MiB after the warm-up → {last / 1024:,.0f} MiB in the "
          f"last {windows.window:.0f}s of traffic ({growth:+.1%}; peak {peak / 1024:,.0f} MiB; "
          f"glibc's heap {heap_first / 1024:,.0f} → {heap_last / 1024:,.0f} MiB)", flush=True)
    return figure(
        what=f"consumer resident memory over a {scale.memory_seconds / 60:g}-minute run at "
             f"{scale.rate:,.0f} events/s",
        value=round(growth * 100, 2), unit="% growth",
        goal="<= 10 %", met=growth <= GOAL_GROWTH and run.drained,
        baseline=round(first / 1024, 1),
        baseline_unit=f"MiB in the {windows.window:g} s after a {windows.warm_up:g} s warm-up",
        summary=f"{growth:+.1%} ({first / 1024:,.0f} → {last / 1024:,.0f} MiB; glibc's heap "
                f"{heap_first / 1024:,.0f} → {heap_last / 1024:,.0f} MiB)",
        last_mib=round(last / 1024, 1), peak_mib=round(peak / 1024, 1),
        heap_mib_first=round(heap_first / 1024, 1), heap_mib_last=round(heap_last / 1024, 1),
        window_seconds=round(windows.window, 1), traffic_seconds=round(windows.end, 1),
        **evaluation_figures(run, windows), **counts(run),
    )


def hot_figure(run: ConsumerRun, scale: Scale) -> dict:
    windows = Windows.of(run, scale.memory_warmup_seconds)
    first, last = windows.first(run.samples), windows.last(run.samples)
    memory = last / first
    evaluation = evaluation_figures(run, windows)
    slower = evaluation["evaluate_ms_last"] / evaluation["evaluate_ms_first"]
    worst = max(memory, slower)
    print(f"  with a customer at {HOT_EVENTS_PER_SECOND} events/s: memory {memory:.2f}x, "
          f"a batch's evaluation {evaluation['evaluate_ms_first']:.1f} → "
          f"{evaluation['evaluate_ms_last']:.1f} ms ({slower:.2f}x)", flush=True)
    return figure(
        what=f"B7 plus one bot-like customer at {HOT_EVENTS_PER_SECOND} events/s: consumer "
             f"memory and a batch's evaluation time, end of the run over its start",
        value=round(worst, 2), unit="x (the larger of memory and evaluation)",
        goal=f"<= {GOAL_HOT_GROWTH:g}", met=worst <= GOAL_HOT_GROWTH and run.drained,
        baseline=round(first / 1024, 1),
        baseline_unit=f"MiB in the {windows.window:g} s after a {windows.warm_up:g} s warm-up",
        summary=f"memory {memory:.2f}x, evaluation {slower:.2f}x",
        memory_growth=round(memory, 3), evaluation_growth=round(slower, 3),
        hot_customer=HOT_CUSTOMER, hot_events_per_second=HOT_EVENTS_PER_SECOND,
        last_mib=round(last / 1024, 1),
        **evaluation, **counts(run),
    )


def evaluation_figures(run: ConsumerRun, windows: Windows) -> dict:
    """A batch's evaluation at the start and end of the run (median ms), and over time."""
    by_minute: dict[int, list[float]] = {}
    for t, ms in run.evaluations:
        if 0 <= t < run.traffic_seconds // 60 * 60:
            by_minute.setdefault(int(t // 60), []).append(ms)
    return {
        "evaluate_ms_first": round(windows.first(run.evaluations), 2),
        "evaluate_ms_last": round(windows.last(run.evaluations), 2),
        "batches": len(run.evaluations),
        "evaluate_ms_by_minute": {minute: round(statistics.median(values), 2)
                                  for minute, values in sorted(by_minute.items())},
    }


def counts(run: ConsumerRun) -> dict:
    """What both figures record of a run beside their value: its memory samples and traffic."""
    return {"samples_mib": [[round(t), round(kib / 1024, 1)] for t, kib in run.samples],
            "heap_samples_mib": [[round(t), round(kib / 1024, 1)] for t, kib in run.heap_samples],
            "published": run.published, "achieved_rate": round(run.achieved_rate, 1),
            "stored": run.stored, "drained": run.drained, "exit_code": run.exit_code,
            "history_customers": run.history_customers, "history_events": run.history_events}


def window_median(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """Median of the samples taken from `start` to `end` seconds into the traffic."""
    inside = [kib for t, kib in samples if start <= t <= end]
    if not inside:
        raise RuntimeError(f"no sample between {start:.0f}s and {end:.0f}s of traffic")
    return statistics.median(inside)


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:])
