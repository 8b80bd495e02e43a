"""B1, B2, B8 and B9: the stream with one consumer and with three, each a process of its own (as
replicas run), on the real emulator and the project's own PostgreSQL.

B1: events/s stored and evaluated from a backlog, every real-time segment evaluated, from the
    first commit to the last (a consumer's start is in its first batch, reported beside),
    beside what the emulator serves at most (synchronous pulls of a thousand, acked in bulk,
    nothing else done) in the same run.
B2: publish → membership committed latency at 1,000 events/s.
B8: one "is customer X in segment Y" lookup, while three consumers take those 1,000 events/s.
B9: the nightly job (copy from PostgreSQL, dbt build, membership) while three consumers take
    1,000 events/s, against the same job alone (the median of five runs each side, the sides
    taking turns); and the stream's latency meanwhile. The control: the job beside processes
    that burn as many cores as the stream takes on its own and touch nothing else, so that
    what the stream costs the job through the CPU shows apart from what it costs through the
    stores they share.

    python -m bench --only B1,B2,B8,B9
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psycopg

from bench.harness import (
    Lab,
    Shop,
    figure,
    median_steps_ms,
    overridden,
    percentile,
    swept_to_now,
    traffic,
    wait_for,
)
from bench.machine import CoresUsed
from bench.nightly import NightlyRun, median_run, run_nightly, step_seconds
from demo.emulator import stop_group
from demo.producer import PublishReport, publish
from segops.pubsub import ensure_pubsub, request_subscriber, subscription_path
from segops.settings import load_settings
from streaming.source import PULL_MESSAGES, PULL_SECONDS

FIGURES = ("B1", "B2", "B8", "B9")
CONSUMERS = (1, 3)


def bare_pull_rate(settings, messages: int) -> float:
    """Messages per second the emulator serves to one loop of synchronous pulls of up to a
    thousand messages, each pull's acks sent in one request, doing nothing else: the limit of
    any consumer of this emulator on this machine."""
    bare = replace(settings, events_topic="bench-bare", subscription="bench-bare")
    ensure_pubsub(bare)
    publish(bare, itertools.islice(traffic(20_000, 1), messages))
    subscriber, path = request_subscriber(), subscription_path(bare)
    received, started = 0, None
    while received < messages:
        pulled = subscriber.pull(subscription=path, max_messages=PULL_MESSAGES,
                                 timeout=PULL_SECONDS * 5).received_messages
        started = started or time.monotonic()
        if pulled:
            subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id for m in pulled])
        received += len(pulled)
    elapsed = time.monotonic() - started
    subscriber.transport.close()
    return messages / elapsed


def publish_elsewhere(customers: int, seed: int, rate: float, duration: float) -> PublishReport:
    """Live traffic published by `segops produce` in its own process, as producers run in
    production; publishing from the consumer's process would make the two share one
    interpreter lock, which no deployment does."""
    done = subprocess.run(
        [sys.executable, "-m", "segops_cli", "produce", "--customers", str(customers),
         "--seed", str(seed), "--rate", str(rate), "--duration", str(duration)],
        capture_output=True, text=True, timeout=duration + 300,
    )
    said = re.search(r"published ([\d,]+) events in ([\d.]+)s.*, (\d+) failed", done.stdout)
    if done.returncode != 0 or not said:
        raise RuntimeError(f"segops produce failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return PublishReport(published=int(said[1].replace(",", "")), failed=int(said[3]),
                         seconds=float(said[2]))


class Lookups(threading.Thread):
    """Asks PostgreSQL whether a random customer is in a random segment, back to back, with the
    milliseconds each answer took, until stopped."""

    def __init__(self, dsn: str, customers: list[str], segments: list[str]):
        super().__init__(daemon=True)
        self.dsn, self.customers, self.segments = dsn, customers, segments
        self.ms: list[float] = []
        self.stopping = threading.Event()
        self.start()

    def run(self) -> None:
        rng = random.Random(8)
        with psycopg.connect(self.dsn, autocommit=True) as con:
            while not self.stopping.is_set():
                asked = time.perf_counter()
                con.execute("select exists (select from segops.segment_membership "
                            "where customer_id = %s and segment = %s)",
                            [rng.choice(self.customers), rng.choice(self.segments)]).fetchone()
                self.ms.append((time.perf_counter() - asked) * 1000)
                time.sleep(0.005)

    def finish(self) -> list[float]:
        self.stopping.set()
        self.join()
        return self.ms


def stored(dsn: str) -> int:
    """Events the consumers stored so far, as their heartbeats count them (committed with each
    batch): a count of the events table would scan millions of rows on every poll."""
    with psycopg.connect(dsn) as con:
        return con.execute("select coalesce(sum(events), 0)::bigint "
                           "from segops.consumer_heartbeat").fetchone()[0]


def run_consumers(lab: Lab, shop: Shop, count: int, *, live: bool = True) -> dict:
    """`count` consumers take a backlog (the cores each side used meanwhile), then, when
    `live`, live traffic at the scale's rate (with lookups alongside); what they and the
    lookups measured."""
    scale = lab.scale
    name = f"{'live' if live else 'backlog'}_{count}"
    dsn = lab.database(name, template=shop.database)
    names = {"SEGOPS_POSTGRES_DSN": dsn, "SEGOPS_EVENTS_TOPIC": name,
             "SEGOPS_SUBSCRIPTION": name}
    reports = [lab.root / f"{name}-{n}.json" for n in range(count)]
    nightly, lookup_ms, report, committed = {}, [], None, True
    with overridden(names):
        settings = load_settings()
        swept_to_now(settings)
        ensure_pubsub(settings)
        publish(settings, itertools.islice(traffic(shop.customers, 2), scale.throughput_events))
        logs = [(lab.root / f"{name}-{n}.log").open("wb") for n in range(count)]
        consumers = [subprocess.Popen([sys.executable, "-m", "bench.live_consumer", str(out)],
                                      stdout=log, stderr=subprocess.STDOUT)
                     for out, log in zip(reports, logs, strict=True)]
        try:
            backlog = scale.throughput_events
            if not wait_for(lambda: stored(dsn) > 0, timeout=300, every=0.05):
                raise RuntimeError(f"{count} consumers stored nothing in 5 minutes")
            cores = CoresUsed({"consumers": [c.pid for c in consumers]}, lab.servers())
            if not wait_for(lambda: stored(dsn) >= backlog, timeout=900, every=0.1):
                raise RuntimeError(f"{count} consumers stored {stored(dsn)} of "
                                   f"{scale.throughput_events} events in 15 minutes")
            cores = cores.stop()
            live_from = time.time()
            if live:
                with psycopg.connect(dsn) as con:
                    customers = [row[0] for row in con.execute(
                        "select customer_id from raw.customers order by random() limit 1000")]
                    segments = [row[0] for row in con.execute(
                        "select segment from segops.realtime_segments")]
                lookups = Lookups(dsn, customers, segments)
                report = publish_elsewhere(shop.customers, 3, scale.rate, scale.latency_seconds)
                committed = wait_for(lambda: stored(dsn) >= backlog + report.published,
                                     timeout=120, every=0.2)
                lookup_ms = lookups.finish()
                if count == 3:
                    nightly = nightly_beside_the_stream(
                        scale, lambda: stored(dsn), lab.root, [c.pid for c in consumers],
                        lab.servers())
        finally:
            for consumer in consumers:
                consumer.terminate()
            for consumer in consumers:
                consumer.wait(timeout=120)
            for log in logs:
                log.close()
            lab.drop(name)
    measured = [json.loads(path.read_text()) for path in reports]
    if nightly:
        nightly["latencies_ms"] = [ms for m in measured for published, ms in m["latencies"]
                                   if any(start <= published <= end
                                          for start, end in nightly["windows"])]
    commits = sorted(c for m in measured for c in m["commits"])  # a drain's, timed below
    latencies = [ms for m in measured for published, ms in m["latencies"]
                 if published >= live_from]
    return {
        "steps_ms": median_steps_ms([laps for m in measured for at, laps in m["steps"]
                                     if at >= live_from]),
        # a drain's throughput (a live run's small backlog may go in a single batch); a
        # consumer's start is in its first batch
        "events_per_second": None if live else sustained_rate(commits),
        "first_batch_seconds": None if live else round(commits[0][0] - commits[0][2], 2),
        "backlog_cores": cores, "latencies_ms": latencies, "lookup_ms": lookup_ms,
        "committed": committed, "published": report.published if report else 0,
        "achieved_rate": report.rate if report else 0.0, "nightly": nightly,
    }


def sustained_rate(commits: list[tuple[float, int, float]]) -> float:
    """Events per second from the first commit to the last: the events committed after the
    first, so neither the first batch's time nor its events count."""
    if len(commits) < 2:
        raise RuntimeError(f"the backlog went in {len(commits)} commit(s): too few to time")
    return sum(messages for _, messages, _ in commits[1:]) / (commits[-1][0] - commits[0][0])


def nightly_beside_the_stream(scale, stored_now, root: Path, consumers: list[int],
                              servers: dict[str, int]) -> dict:
    """The nightly job alone (after a first night that copies the backlog in), while live
    traffic at the scale's rate flows through the consumers (`segops produce` in its own
    process, started before and stopped after each stretch of runs beside the stream), and
    beside a plain CPU load of the stream's cores (bench.cpu_load), in ORDER: the median
    durations, the windows in which the stream's latencies count, and the cores each process
    used in each side's median run. The job's dbt writes its own target folder, so the
    consumers never read a manifest it is writing."""
    target = root / "live-nightly-target"
    target.mkdir()
    shutil.copy(load_settings().manifest_path, target / "manifest.json")
    with overridden({"SEGOPS_DBT_TARGET_DIR": str(target), "DBT_TARGET_PATH": str(target)}):
        return _nightly_beside_the_stream(scale, stored_now, consumers, servers)


ALONE, BESIDE, CONTROL = "alone", "beside the stream", "beside a CPU load"
# A two-second job beside three consumers on two cores varies by a fifth from one run to the
# next, so the figure is the median of five runs each side (a run is a few seconds). Each night
# also leaves the lake a little larger until maintenance expires its old snapshots (the job
# about 1 % slower a night here), so the sides take turns and none gets the later nights.
ORDER = (ALONE, BESIDE, CONTROL, CONTROL, BESIDE, ALONE, ALONE, BESIDE, CONTROL, CONTROL,
         BESIDE, ALONE, ALONE, BESIDE, CONTROL)
# How long the stream's own cores are measured, before the first run beside it.
STREAM_CORES_SECONDS = 5.0


def _nightly_beside_the_stream(scale, stored_now, consumers: list[int],
                               servers: dict[str, int]) -> dict:
    run_nightly(load_settings())
    runs: dict[str, list[NightlyRun]] = {side: [] for side in ORDER}
    cores: dict[str, list[dict[str, float]]] = {side: [] for side in ORDER}
    windows, producer, load, stream_cores = [], None, [], 0.0
    try:
        for side in ORDER:
            if side != BESIDE and producer is not None:
                _stop_live_load(producer, stored_now)
                producer = None
            if side != CONTROL and load:
                _stop_cpu_load(load)
                load = []
            if side == BESIDE and producer is None:
                producer = _live_load(scale, stored_now)
                if not stream_cores:
                    stream_cores = _stream_cores(consumers, producer, servers)
            if side == CONTROL and not load:
                load = _cpu_load(stream_cores)
            groups = {"nightly": [os.getpid()], "consumers": consumers}
            if producer is not None:
                groups["producer"] = [producer.pid]
            if load:
                groups["cpu load"] = [process.pid for process in load]
            used, started = CoresUsed(groups), time.time()
            runs[side].append(run_nightly(load_settings()))
            cores[side].append(used.stop())
            if side == BESIDE:
                windows.append((started, time.time()))
    finally:  # never left publishing into the rest of a run (it may ignore SIGTERM, as a
        # background job inherits), nor burning
        if producer is not None:
            stop_group(producer, signal.SIGKILL, timeout=10)
        _stop_cpu_load(load)
    median = {side: median_run(side_runs) for side, side_runs in runs.items()}
    return {"alone_seconds": median[ALONE].run_seconds,
            "busy_seconds": median[BESIDE].run_seconds,
            "control_seconds": median[CONTROL].run_seconds,
            "stream_cores": round(stream_cores, 2),
            "nights_seconds": {side: [round(run.run_seconds, 2) for run in side_runs]
                               for side, side_runs in runs.items()},
            "windows": windows,
            "cores": {side: cores[side][runs[side].index(run)] for side, run in median.items()},
            "steps_seconds": {side: step_seconds(run.result) for side, run in median.items()}}


def _stream_cores(consumers: list[int], producer: subprocess.Popen,
                  servers: dict[str, int]) -> float:
    """The cores the stream takes on its own: the consumers, the producer, PostgreSQL and the
    emulator."""
    used = CoresUsed({"consumers": consumers, "producer": [producer.pid]}, servers)
    time.sleep(STREAM_CORES_SECONDS)
    return sum(cores for name, cores in used.stop().items() if name != "machine")


def _cpu_load(cores: float) -> list[subprocess.Popen]:
    """Processes burning `cores` between them, at most half a core each (as the stream's
    are spread over three consumers, PostgreSQL and the emulator)."""
    count = max(1, math.ceil(cores / 0.5))
    return [subprocess.Popen([sys.executable, "-m", "bench.cpu_load", str(cores / count)])
            for _ in range(count)]


def _stop_cpu_load(load: list[subprocess.Popen]) -> None:
    for process in load:
        process.kill()
        process.wait()


def _live_load(scale, stored_now) -> subprocess.Popen:
    """`segops produce` at the scale's rate, once its first events are stored."""
    before = stored_now()
    producer = subprocess.Popen(
        [sys.executable, "-m", "segops_cli", "produce", "--customers",
         str(scale.stream_customers), "--seed", "4", "--rate",
         str(scale.rate), "--duration", "3600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if not wait_for(lambda: stored_now() > before, timeout=120, every=0.1):
        stop_group(producer, signal.SIGKILL, timeout=10)
        raise RuntimeError("no live event reached PostgreSQL within 2 minutes")
    return producer


def _stop_live_load(producer: subprocess.Popen, stored_now) -> None:
    """Stop the producer, then wait until the consumers stored what it published: the count
    stays the same for a second."""
    stop_group(producer, signal.SIGKILL, timeout=10)
    last = stored_now()

    def unchanged() -> bool:
        nonlocal last
        previous, last = last, stored_now()
        return last == previous

    if not wait_for(unchanged, timeout=120, every=1.0):
        raise RuntimeError("the consumers still stored events 2 minutes after the load stopped")


def measure(lab: Lab) -> dict[str, dict]:
    shop = lab.shop(lab.scale.stream_customers)
    history = lab.shop(lab.scale.history_customers)
    with lab.workspace("live", shop, pubsub=True) as settings:
        ensure_pubsub(settings)
        bare = bare_pull_rate(settings, lab.scale.throughput_events)
        print(f"  the emulator's limit, pull + ack: {bare:,.0f} msg/s", flush=True)
        drains, runs = {}, {}
        for count in CONSUMERS:
            drains[count] = run_consumers(lab, history, count, live=False)
            print(f"  {count} consumer(s), {history.label} of history: "
                  f"{drains[count]['events_per_second']:,.0f} events/s after a first batch of "
                  f"{drains[count]['first_batch_seconds']:.1f}s, cores "
                  f"{drains[count]['backlog_cores']}", flush=True)
        for count in CONSUMERS:
            runs[count] = run_consumers(lab, shop, count)
            print(f"  {count} consumer(s), {shop.label}: live traffic measured", flush=True)

    rates = {n: run["events_per_second"] for n, run in drains.items()}
    best = max(rates.values())
    latency = {n: {q: percentile(run["latencies_ms"], q) for q in (50, 95, 99)}
               for n, run in runs.items()}
    lookups = runs[3]["lookup_ms"]
    nightly = runs[3]["nightly"]
    beside = {q: percentile(nightly["latencies_ms"], q) for q in (50, 99)}
    ratio = nightly["busy_seconds"] / nightly["alone_seconds"]
    control = nightly["control_seconds"] / nightly["alone_seconds"]
    p50, p99 = percentile(lookups, 50), percentile(lookups, 99)
    stream_shop = {"history_customers": shop.customers, "history_events": shop.events}
    return {
        "B1": figure(
            what="consumer throughput from a backlog, every real-time segment evaluated, "
                 f"1 and 3 consumer processes, {history.label} of history",
            value=round(best / bare, 3), unit="x the emulator's limit (the better of 1 and 3)",
            goal=">= 10,000 events/s and >= 0.5x the limit",
            met=best >= 10_000 and best >= 0.5 * bare,
            baseline=round(bare, 1), baseline_unit="msg/s pulled and acked, nothing else",
            summary=f"1: {rates[1]:,.0f} events/s, 3: {rates[3]:,.0f} events/s "
                    f"({best / bare:.2f}x the emulator's {bare:,.0f} msg/s)",
            events_per_second={str(n): round(r, 1) for n, r in rates.items()},
            # cores used while the backlog drained: the consumers, PostgreSQL, the emulator
            # and the whole machine
            cores={str(n): run["backlog_cores"] for n, run in drains.items()},
            first_batch_seconds={str(n): run["first_batch_seconds"] for n, run in drains.items()},
            events=lab.scale.throughput_events, history_customers=history.customers,
            history_events=history.events),
        "B2": figure(
            what=f"publish → membership committed latency at {lab.scale.rate:,.0f} events/s, "
                 "1 and 3 consumer processes",
            value=round(latency[3][50], 1), unit="ms p50 (3 consumers)",
            goal="p50 <= 250 ms, p99 <= 1000 ms, with 1 and with 3",
            met=all(q[50] <= 250 and q[99] <= 1000 for q in latency.values())
            and all(run["committed"] for run in runs.values()),
            baseline=None,
            summary="; ".join(f"{n}: p50 {q[50]:,.0f} ms, p95 {q[95]:,.0f}, p99 {q[99]:,.0f}"
                              for n, q in latency.items()),
            percentiles_ms={str(n): {f"p{k}": round(v, 1) for k, v in q.items()}
                            for n, q in latency.items()},
            samples={str(n): len(run["latencies_ms"]) for n, run in runs.items()},
            achieved_rate={str(n): round(run["achieved_rate"], 1) for n, run in runs.items()},
            median_steps_ms={str(n): run["steps_ms"] for n, run in runs.items()},
            **stream_shop),
        "B8": figure(
            what="one membership lookup in PostgreSQL while 3 consumers take "
                 f"{lab.scale.rate:,.0f} events/s",
            value=round(p99, 2), unit="ms p99", goal="p99 <= 10 ms", met=p99 <= 10,
            baseline=None,
            summary=f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(lookups):.1f} ms "
                    f"({len(lookups):,} lookups)",
            p50_ms=round(p50, 2), max_ms=round(max(lookups), 2), lookups=len(lookups),
            refused=0, **stream_shop),
        "B9": figure(
            what="the nightly job (PostgreSQL copy, dbt, membership) while 3 consumers take "
                 f"{lab.scale.rate:,.0f} events/s, and the stream's latency meanwhile; beside "
                 "it, the job beside a plain CPU load of the stream's cores",
            value=round(ratio, 3), unit="x the job alone",
            goal="<= 1.2x alone; stream p99 <= 1000 ms meanwhile",
            met=ratio <= 1.2 and beside[99] <= 1000,
            baseline=round(nightly["alone_seconds"], 2), baseline_unit="s alone",
            summary=f"{nightly['busy_seconds']:.1f} s beside the stream, "
                    f"{nightly['alone_seconds']:.1f} s alone ({ratio:.2f}x, medians of "
                    f"{ORDER.count(ALONE)}); beside a CPU load of the stream's "
                    f"{nightly['stream_cores']:.2f} cores {control:.2f}x; stream meanwhile "
                    f"p50 {beside[50]:,.0f} ms, p99 {beside[99]:,.0f} ms",
            busy_seconds=round(nightly["busy_seconds"], 2), stream_p50_ms=round(beside[50], 1),
            stream_p99_ms=round(beside[99], 1), samples=len(nightly["latencies_ms"]),
            # the control: the job beside processes that only burn the cores the stream takes
            # on its own (consumers, producer, PostgreSQL, emulator), touching no store
            control_seconds=round(nightly["control_seconds"], 2),
            control_ratio=round(control, 3), stream_cores=nightly["stream_cores"],
            # cores used over each side's median run of the job, by the job (this process),
            # the consumers, the producer, the CPU load and the whole machine (the rest:
            # PostgreSQL, the emulator)
            cores=nightly["cores"], steps_seconds=nightly["steps_seconds"],
            nights_seconds=nightly["nights_seconds"], order=list(ORDER), **stream_shop),
    }
