"""Streaming figures on the real emulator, each beside its limit in the same run.

B1: consumer throughput with every real-time segment evaluated, against a bare streaming pull
    plus ack of the same emulator with the same client and flow control.
B2: publish → membership committed latency at a steady rate (p50, p95, p99, max).

    python -m bench.stream [--events N] [--rate R] [--duration S] [--customers C]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from google.cloud import pubsub_v1

from bench.machine import describe_machine
from segops.clock import utc_now
from segops.dbt import run_dbt
from segops.emulator import PubSubEmulator
from segops.pubsub import ensure_pubsub, subscription_path
from segops.settings import load_settings
from segops.synthetic import generate
from segops.warehouse import connect
from streaming.consumer import Consumer, ConsumerConfig
from streaming.producer import publish
from streaming.source import LEASE_SECONDS, PubSubSource
from streaming.traffic import ShopTraffic, known_customers

RESULTS = Path(__file__).parent / "results"


def traffic(customers: int, seed: int):
    return ShopTraffic(known_customers(customers), seed=seed, clock=utc_now)


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
        subscription_path(bare), callback=callback,
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


class Recorder:
    """Counts committed messages and their publish → commit latency."""

    def __init__(self):
        self.received = 0
        self.latencies_ms: list[float] = []
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
        if self.recording:
            self.latencies_ms += [
                (committed - m.publish_time).total_seconds() * 1000
                for m in batch if m.publish_time
            ]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--output", type=Path, default=RESULTS / "stream.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, PubSubEmulator() as emulator:
        os.environ.update(
            PUBSUB_EMULATOR_HOST=emulator.host,
            SEGOPS_WAREHOUSE=str(Path(tmp) / "warehouse.duckdb"),
            SEGOPS_DBT_TARGET_DIR=str(Path(tmp) / "target"),
            SEGOPS_PROJECT="bench",
        )
        settings = load_settings()
        with connect(settings.warehouse) as con:
            generate(con, customers=args.customers, now=utc_now())
        run_dbt(settings, ["build"])
        ensure_pubsub(settings)
        config = ConsumerConfig()

        bare = bare_pull_rate(settings, args.events, config.batch_size * 5)
        print(f"bare pull + ack: {bare:,.0f} msg/s")

        publish(settings, itertools.islice(traffic(args.customers, 2), args.events))
        recorder = Recorder()
        recorder.recording = False
        consumer = Consumer(settings, config, on_commit=recorder)
        worker = threading.Thread(
            target=consumer.run, args=(PubSubSource(subscription_path(settings)),), daemon=True
        )
        worker.start()
        while recorder.received < args.events:
            time.sleep(0.05)
        throughput = args.events / (recorder.last_commit - recorder.first_commit)
        print(f"consumer: {throughput:,.0f} events/s ({throughput / bare:.2f}x bare pull)")

        recorder.recording = True
        report = publish(settings, traffic(args.customers, 3), rate=args.rate,
                         duration=args.duration)
        target = recorder.received + report.published
        deadline = time.monotonic() + 120
        while recorder.received < target and time.monotonic() < deadline:
            time.sleep(0.05)
        consumer.stop()
        worker.join(timeout=60)

    latencies = recorder.latencies_ms
    figures = {
        "B1": {
            "value": round(throughput / bare, 3), "unit": "x bare pull+ack", "goal": ">= 0.9",
            "met": throughput / bare >= 0.9, "baseline": round(bare, 1),
            "consumer_events_per_second": round(throughput, 1),
            "command": "python -m bench.stream",
        },
        "B2": {
            "value": round(percentile(latencies, 50), 1), "unit": "ms p50",
            "goal": "p50 <= 250 ms, p99 <= 1000 ms",
            "met": percentile(latencies, 50) <= 250 and percentile(latencies, 99) <= 1000,
            "baseline": None,
            "p95_ms": round(percentile(latencies, 95), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies), 1),
            "rate": args.rate, "published": report.published,
            "achieved_rate": round(report.rate, 1), "samples": len(latencies),
            "command": "python -m bench.stream",
        },
    }
    print(json.dumps(figures, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": describe_machine(), "figures": figures},
                                      indent=2) + "\n")


if __name__ == "__main__":
    main()
