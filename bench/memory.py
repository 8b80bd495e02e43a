"""B7: the consumer's resident memory stays flat over a long run at a steady rate.

`segops stream` runs as its own process on the streaming shop and the emulator while this
process publishes live shop traffic at the B2 rate (10 minutes at full scale). Its resident set
(VmRSS in /proc/<pid>/status) is sampled every few seconds from the moment traffic starts. The
figure is the growth of the last sample over the first sample past the warm-up (the first
minute at full scale). Afterwards the consumer must have stored every event and, on SIGTERM,
drain and exit 0.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.harness import Lab, figure, traffic, wait_for
from segops.pubsub import ensure_pubsub
from segops.warehouse import connect
from streaming.producer import publish

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
    with connect(settings.warehouse, read_only=True, timeout=30) as con:
        return con.execute("select count(*) from raw.events").fetchone()[0]


def measure(lab: Lab) -> dict[str, dict]:
    scale = lab.scale
    shop = lab.shop(scale.stream_customers)
    with lab.workspace("memory", shop.directory, pubsub=True) as settings:
        ensure_pubsub(settings)
        log = settings.warehouse.parent / "stream.log"
        with open(log, "w") as output:
            consumer = subprocess.Popen(
                [sys.executable, "-m", "segops.cli", "stream"],
                stdout=output, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1],
            )
        try:
            sampler = Sampler(consumer.pid, scale.memory_sample_seconds)
            sampler.start()
            report = publish(settings, traffic(scale.stream_customers, 4), rate=scale.rate,
                             duration=scale.memory_seconds)
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

    samples = sampler.samples
    warm = next(((t, kib) for t, kib in samples if t >= scale.memory_warmup_seconds), None)
    if warm is None or warm == samples[-1]:
        raise RuntimeError(f"too few memory samples ({len(samples)}) past the warm-up")
    first, last = warm[1], samples[-1][1]
    growth = last / first - 1
    peak = max(kib for _, kib in samples)
    print(f"  RSS {first / 1024:,.0f} MiB after {warm[0]:.0f}s → {last / 1024:,.0f} MiB at "
          f"{samples[-1][0]:.0f}s ({growth:+.1%})", flush=True)
    return {
        "B7": figure(
            what=f"consumer resident memory over a {scale.memory_seconds / 60:g}-minute run at "
                 f"{scale.rate:,.0f} events/s",
            value=round(growth * 100, 2), unit="% growth",
            goal="<= 10 %", met=growth <= GOAL_GROWTH and drained,
            baseline=round(first / 1024, 1),
            baseline_unit=f"MiB after {scale.memory_warmup_seconds:g} s",
            summary=f"{growth:+.1%} ({first / 1024:,.0f} → {last / 1024:,.0f} MiB)",
            last_mib=round(last / 1024, 1), peak_mib=round(peak / 1024, 1),
            samples_mib=[[round(t), round(kib / 1024, 1)] for t, kib in samples],
            published=report.published, achieved_rate=round(report.rate, 1),
            stored=stored, drained=drained, exit_code=code,
            history_customers=shop.customers, history_events=shop.events,
        ),
    }


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:])
