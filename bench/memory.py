"""B7: the consumer's resident memory stays flat over a long run at a steady rate.

`segops stream` runs as its own process on the streaming shop (in PostgreSQL) and the emulator
while this process publishes live shop traffic at the B2 rate (10 minutes at full scale). Its
resident set (VmRSS in /proc/<pid>/status) is sampled every few seconds. The figure is the growth
of the last minute of traffic over the minute after the warm-up (the first minute), each the
median of its samples, so one allocation spike does not decide it. Both windows lie inside the
traffic: once it stops, the consumer's memory falls, which says nothing about a consumer that
never idles. Afterwards the consumer must have stored every event and, on SIGTERM, drain and
exit 0.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from bench.harness import Lab, figure, traffic, wait_for
from demo.producer import publish
from segops.pubsub import ensure_pubsub

FIGURES = ("B7",)
GOAL_GROWTH = 0.10


def resident_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


class Sampler(threading.Thread):
    """(seconds since start, KiB) of the process's resident set every `every` seconds."""

    def __init__(self, pid: int, every: float):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self.started = time.monotonic()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            kib = resident_kib(self.pid)
            if kib is not None:
                self.samples.append((time.monotonic() - self.started, kib))
            self.done.wait(self.every)


def stored_events(settings) -> int:
    with psycopg.connect(settings.postgres_dsn) as con:
        return con.execute("select count(*) from raw.events").fetchone()[0]


def measure(lab: Lab) -> dict[str, dict]:
    scale = lab.scale
    shop = lab.shop(scale.stream_customers)
    with lab.workspace("memory", shop, pubsub=True) as settings:
        ensure_pubsub(settings)
        log = settings.dbt_target_dir.parent / "stream.log"
        with open(log, "w") as output:
            consumer = subprocess.Popen(
                [sys.executable, "-m", "segops_cli", "stream"],
                stdout=output, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1],
            )
        try:
            sampler = Sampler(consumer.pid, scale.memory_sample_seconds)
            sampler.start()
            traffic_started = time.monotonic() - sampler.started
            report = publish(settings, traffic(scale.stream_customers, 4), rate=scale.rate,
                             duration=scale.memory_seconds)
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

    samples = [(t - traffic_started, kib) for t, kib in sampler.samples]
    warm_up, end = scale.memory_warmup_seconds, traffic_ended - traffic_started
    window = min(warm_up, (end - warm_up) / 2)
    first = window_median(samples, warm_up, warm_up + window)
    last = window_median(samples, end - window, end)
    growth = last / first - 1
    peak = max(kib for t, kib in samples if 0 <= t <= end)
    print(f"  RSS {first / 1024:,.0f} MiB after the warm-up → {last / 1024:,.0f} MiB in the "
          f"last {window:.0f}s of traffic ({growth:+.1%}; peak {peak / 1024:,.0f} MiB)",
          flush=True)
    return {
        "B7": figure(
            what=f"consumer resident memory over a {scale.memory_seconds / 60:g}-minute run at "
                 f"{scale.rate:,.0f} events/s",
            value=round(growth * 100, 2), unit="% growth",
            goal="<= 10 %", met=growth <= GOAL_GROWTH and drained,
            baseline=round(first / 1024, 1),
            baseline_unit=f"MiB in the {window:g} s after a {warm_up:g} s warm-up",
            summary=f"{growth:+.1%} ({first / 1024:,.0f} → {last / 1024:,.0f} MiB)",
            last_mib=round(last / 1024, 1), peak_mib=round(peak / 1024, 1),
            window_seconds=round(window, 1), traffic_seconds=round(end, 1),
            samples_mib=[[round(t), round(kib / 1024, 1)] for t, kib in samples],
            published=report.published, achieved_rate=round(report.rate, 1),
            stored=stored, drained=drained, exit_code=code,
            history_customers=shop.customers, history_events=shop.events,
        ),
    }


def window_median(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Median KiB of the samples taken from `start` to `end` seconds into the traffic."""
    inside = [kib for t, kib in samples if start <= t <= end]
    if not inside:
        raise RuntimeError(f"no memory sample between {start:.0f}s and {end:.0f}s of traffic")
    return statistics.median(inside)


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:])
