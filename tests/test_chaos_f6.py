"""F6: PostgreSQL restarts under a streaming consumer, while events keep arriving.

The scenario stops a server of its own (the session's is shared by other tests), keeps
publishing through the outage, starts it again on the same data and port, and checks the
consumer outlived it: one line when it went, one when it came back, every event stored once,
membership equal to a batch recomputation.
"""

from __future__ import annotations

import itertools
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from demo.postgres import LocalPostgres
from demo.producer import publish
from demo.traffic import ShopTraffic
from segops.clock import utc_now
from segops.live_schema import ensure_live_schema
from segops.pubsub import ensure_pubsub
from segops.settings import Settings, load_settings
from tests.chaos_helpers import (
    ConsumerProcess,
    drift,
    record,
    sized,
    stored_count,
    tally,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.chaos

OUTAGE_LINE = "PostgreSQL unreachable"
BACK_LINE = "PostgreSQL is back"


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A server this test may stop: the session's serves other tests meanwhile. Not under
    pytest's folders, which the `postgres` user (the server's, as root) cannot reach."""
    folder = Path(tempfile.mkdtemp(prefix="segops-f6-postgres-"))
    folder.chmod(0o755)
    server = LocalPostgres(folder)
    try:
        server.start()
        with psycopg.connect(server.dsn) as con:
            ensure_live_schema(con)
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def settings_on(own_postgres: LocalPostgres, manifest: Settings, pubsub: Settings,
                monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This test's manifest and Pub/Sub project, the live state on its own server; the
    consumer process inherits them."""
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", own_postgres.dsn)
    return load_settings()


class Traffic(threading.Thread):
    """Shop events published at `rate` per second until `finish()`; `sent` holds their ids."""

    def __init__(self, settings: Settings, rate: float, seed: int = 6, customers: int = 300):
        super().__init__(daemon=True)
        rng, now, ids = random.Random(seed), utc_now(), itertools.cycle(range(customers))
        self.events = ShopTraffic(
            lambda _: f"k{next(ids)}", seed=seed, concurrency=50,
            clock=lambda: now - timedelta(minutes=rng.randint(0, 120)))
        self.settings, self.rate = settings, rate
        self.sent: set[str] = set()
        self.failed: int | None = None
        self.stopping = threading.Event()
        self.start()

    def _until_finished(self):
        for event in self.events:
            if self.stopping.is_set():
                return
            self.sent.add(event["event_id"])
            yield event

    def run(self) -> None:
        self.failed = publish(self.settings, self._until_finished(), rate=self.rate).failed

    def finish(self) -> set[str]:
        self.stopping.set()
        self.join()
        assert self.failed == 0, f"{self.failed} publishes failed"
        return self.sent


def test_f6_postgres_restarts_under_the_consumer(own_postgres, settings_on, tmp_path):
    settings = settings_on
    outage = sized(15, 60)
    ensure_pubsub(settings)
    consumer = ConsumerProcess(tmp_path / "f6.log", "--batch-size", "200")
    # At 1,000/s (60,000 events held back at full size) two runs on 2 busy cores stored nothing
    # new for minutes after the first catch-up: every delivery was a redelivery of a stored
    # event, the pattern F1's notes describe (docs/reliability.md). F6 is about the restart.
    traffic = Traffic(settings, rate=sized(200, 250))
    try:
        wait_until(consumer.while_alive(lambda: stored_count(settings) >= 200), 120,
                   "the stream storing events")
        own_postgres.stop()
        stopped = time.monotonic()
        wait_until(consumer.while_alive(lambda: OUTAGE_LINE in consumer.log()), 60,
                   "the consumer to say PostgreSQL is gone")
        time.sleep(max(0.0, outage - (time.monotonic() - stopped)))  # the outage itself
        assert consumer.alive(), consumer.log()[-3000:]
        own_postgres.start()
        restarted = time.monotonic()
        outage_seconds = restarted - stopped
        backlog = len(traffic.sent)
        wait_until(consumer.while_alive(lambda: stored_count(settings) >= backlog), 180,
                   "the events published during the outage")
        catch_up = time.monotonic() - restarted
        published = traffic.finish()
        wait_for_count(lambda: stored_count(settings), len(published),
                       f"{len(published)} events stored", stall=120, keep_going=consumer.alive)
        assert consumer.alive(), consumer.log()[-3000:]
    finally:
        traffic.stopping.set()
        code = consumer.stop(signal.SIGTERM)
    assert code == 0, consumer.log()[-3000:]

    log = consumer.log()
    lines = (log.count(OUTAGE_LINE), log.count(BACK_LINE))
    counts = tally(settings, published)
    off = drift(settings)
    passed = (counts["lost"] == counts["duplicates"] == 0 and lines == (1, 1)
              and not any(off.values()))
    record("F6", counts, passed, outage_seconds=round(outage_seconds, 1),
           catch_up_seconds=round(catch_up, 1), membership_drift=sum(off.values()))
    assert "Traceback" not in log, log[-3000:]
    assert lines == (1, 1), "one line when PostgreSQL went, one when it came back"
    assert counts["lost"] == counts["duplicates"] == 0, counts
    assert off == dict.fromkeys(off, 0), "membership equals the batch recomputation"
