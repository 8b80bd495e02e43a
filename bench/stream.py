"""B1 and B2: the streaming consumer on the real emulator, each beside its limit in the same run.

B1: consumer throughput with every real-time segment evaluated, against a bare streaming pull
    plus ack of the same emulator with the same client, scheduler and flow control.
B2: publish → membership committed latency at a steady rate (p50, p95, p99, max).

    python -m bench --only B1,B2
"""

from __future__ import annotations

import contextlib
import itertools
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace

from google.cloud import pubsub_v1

from bench.harness import Lab, figure, median_steps_ms, percentile, traffic, wait_for
from demo.producer import PublishReport, publish
from segops.clock import utc_now
from segops.pubsub import ensure_pubsub, subscription_path
from streaming.consumer import Consumer, ConsumerConfig
from streaming.source import LEASE_SECONDS, InlineScheduler, PubSubSource

FIGURES = ("B1", "B2")


def bare_pull_rate(settings, messages: int, max_outstanding: int) -> float:
    """Messages per second a plain streaming pull that only acks can take from the emulator."""
    bare = replace(settings, events_topic="bench-bare", subscription="bench-bare")
    ensure_pubsub(bare)
    publish(bare, itertools.islice(traffic(20_000, 1), messages))
    received, done, first = [0], threading.Event(), []

    def callback(message) -> None:
        if not first:
            first.append(time.monotonic())
        message.ack()
        received[0] += 1
        if received[0] >= messages:
            done.set()

    subscriber = pubsub_v1.SubscriberClient()
    future = subscriber.subscribe(
        subscription_path(bare), callback=callback, scheduler=InlineScheduler(),
        flow_control=pubsub_v1.types.FlowControl(
            max_messages=max_outstanding, max_duration_per_lease_extension=LEASE_SECONDS),
    )
    done.wait(timeout=600)
    elapsed = time.monotonic() - first[0]
    future.cancel()
    with contextlib.suppress(Exception):  # a cancelled stream reports its cancellation
        future.result(timeout=10)
    subscriber.close()
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


class Recorder:
    """Counts committed messages and their publish → commit latency."""

    def __init__(self):
        self.received = 0
        self.latencies_ms: list[float] = []
        self.steps: list[dict[str, float]] = []  # of each batch recorded (BatchOutcome.steps)
        self.batch_sizes: list[int] = []
        self.first_commit: float | None = None
        self.last_commit: float | None = None
        self.recording = True

    def __call__(self, batch, outcome) -> None:
        committed = utc_now()
        now = time.monotonic()
        if batch:
            self.first_commit = self.first_commit or now
            self.last_commit = now
        self.received += outcome.received
        if self.recording and batch:
            self.steps.append(outcome.steps)
            self.batch_sizes.append(len(batch))
        if self.recording:
            self.latencies_ms += [
                (committed - m.publish_time).total_seconds() * 1000
                for m in batch if m.publish_time
            ]


def measure(lab: Lab) -> dict[str, dict]:
    scale = lab.scale
    events, customers = scale.throughput_events, scale.stream_customers
    shop = lab.shop(customers)
    with lab.workspace("stream", shop.directory, pubsub=True) as settings:
        ensure_pubsub(settings)
        config = ConsumerConfig()

        bare = bare_pull_rate(settings, events, config.batch_size * 5)
        print(f"  bare pull + ack: {bare:,.0f} msg/s", flush=True)

        publish(settings, itertools.islice(traffic(customers, 2), events))
        recorder = Recorder()
        recorder.recording = False
        consumer = Consumer(settings, config, on_commit=recorder)
        worker = threading.Thread(
            target=consumer.run, args=(PubSubSource(subscription_path(settings)),), daemon=True
        )
        worker.start()
        try:
            if not wait_for(lambda: recorder.received >= events, timeout=600):
                raise RuntimeError(f"the consumer took only {recorder.received} of {events} "
                                   "messages in 10 minutes")
            throughput = events / (recorder.last_commit - recorder.first_commit)
            print(f"  consumer: {throughput:,.0f} events/s ({throughput / bare:.2f}x bare pull)",
                  flush=True)

            recorder.recording = True
            before = recorder.received
            report = publish_elsewhere(customers, 3, scale.rate, scale.latency_seconds)
            target = before + report.published
            committed = wait_for(lambda: recorder.received >= target, timeout=120)
        finally:
            consumer.stop()
            worker.join(timeout=60)

    latencies = recorder.latencies_ms
    p50, p95, p99 = (percentile(latencies, q) for q in (50, 95, 99))
    return {
        "B1": figure(
            what="consumer throughput, every real-time segment evaluated, on the emulator",
            value=round(throughput / bare, 3), unit="x bare pull+ack", goal=">= 0.9",
            met=throughput / bare >= 0.9, baseline=round(bare, 1), baseline_unit="msg/s",
            summary=f"{throughput / bare:.2f}x ({throughput:,.0f} events/s)",
            consumer_events_per_second=round(throughput, 1), events=events,
            history_customers=customers, history_events=shop.events,
        ),
        "B2": figure(
            what=f"publish → membership committed latency at {scale.rate:,.0f} events/s",
            value=round(p50, 1), unit="ms p50", goal="p50 <= 250 ms, p99 <= 1000 ms",
            met=p50 <= 250 and p99 <= 1000 and committed, baseline=None,
            summary=f"p50 {p50:,.0f} ms, p95 {p95:,.0f}, p99 {p99:,.0f}, "
                    f"max {max(latencies):,.0f}",
            p95_ms=round(p95, 1), p99_ms=round(p99, 1), max_ms=round(max(latencies), 1),
            rate=scale.rate, seconds=scale.latency_seconds, published=report.published,
            achieved_rate=round(report.rate, 1), samples=len(latencies),
            all_committed_within_120_s=committed,
            batches=len(recorder.steps),
            median_batch_size=statistics.median(recorder.batch_sizes or [0]),
            median_steps_ms=median_steps_ms(recorder.steps),
            history_customers=customers, history_events=shop.events,
        ),
    }
