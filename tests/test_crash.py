"""`kill -9` of the consumer mid-stream loses nothing and duplicates nothing."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from segops.clock import utc_now
from segops.heartbeat import latest_heartbeat
from segops.parity import measure_drift
from segops.warehouse import connect
from streaming.traffic import ShopTraffic
from tests.stream_helpers import publish_all, realtime_segments

EVENTS = 20_000
REDELIVERY_TIMEOUT = 240


def start_consumer(settings, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "segops.cli", "--verbose", "stream", *args],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stored_events(settings) -> int:
    with connect(settings.warehouse, read_only=True) as con:
        return con.execute("select count(*) from raw.events").fetchone()[0]


@pytest.mark.slow
def test_kill_dash_nine_mid_stream_then_restart(warehouse, pubsub):
    rng = random.Random(9)
    now = utc_now()
    ids = itertools.cycle(range(300))
    traffic = ShopTraffic(lambda r: f"k{next(ids)}", seed=2, concurrency=50,
                          clock=lambda: now - timedelta(minutes=rng.randint(0, 120)))
    publish_all(pubsub, itertools.islice(traffic, EVENTS))

    consumer = start_consumer(pubsub, "--batch-size", "100")
    committed = 0
    for line in consumer.stderr:  # ends if the consumer dies
        committed += b"committed batch" in line
        if committed == 5:
            break
    assert committed == 5, "the consumer committed a few batches before the kill"
    consumer.send_signal(signal.SIGKILL)
    consumer.wait()
    assert 0 < stored_events(pubsub) < EVENTS, "killed mid-stream"

    # What the killed consumer had leased comes back as its leases expire; the emulator
    # staggers that redelivery over a minute or more, so poll for the outcome.
    restarted = start_consumer(pubsub)
    deadline = time.monotonic() + REDELIVERY_TIMEOUT
    while stored_events(pubsub) < EVENTS and time.monotonic() < deadline:
        assert restarted.poll() is None, restarted.stderr.read().decode()[-2000:]
        time.sleep(1)
    restarted.send_signal(signal.SIGTERM)
    _, stderr = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, stderr.decode()[-2000:]

    with connect(pubsub.warehouse) as con:
        total, distinct = con.execute(
            "select count(*), count(distinct event_id) from raw.events"
        ).fetchone()
        watermark = latest_heartbeat(con).evaluated_at
        drift = {s.name: measure_drift(con, s, watermark).total for s in realtime_segments(pubsub)}
    assert (total, distinct) == (EVENTS, EVENTS), "every event stored exactly once"
    assert drift == dict.fromkeys(drift, 0), "membership equals the batch recomputation"
