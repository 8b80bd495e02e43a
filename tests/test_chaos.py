"""The fault suite: nothing lost or duplicated under crashes, poison input, contention, restarts.

Each scenario runs the real consumer against the real emulator and the live state in a real
PostgreSQL database of its own (F6 on a server of its own, which it stops and starts), and
records its counts (see tests/chaos_helpers.py). `make chaos` runs them at full size.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from google.cloud import pubsub_v1

from demo.emulator import PubSubEmulator, free_port
from demo.postgres import LocalPostgres, temporary_postgres
from demo.producer import publish
from demo.traffic import ShopTraffic
from orchestration.realtime import build_realtime_sensor
from orchestration.resources import warehouse_resource
from segops.clock import utc_now
from segops.dbt import compile_segments, run_dbt
from segops.lake import lake_connection
from segops.live_heartbeat import heartbeats
from segops.live_schema import ensure_live_schema
from segops.pubsub import ensure_pubsub, topic_path
from segops.settings import DBT_PROJECT_DIR, Settings, load_settings
from streaming.live_consumer import LiveConsumer
from streaming.stream_loop import ConsumerConfig
from tests.chaos_helpers import (
    SCALE,
    ConsumerProcess,
    dead_letters,
    drift,
    live_changes_alternate,
    record,
    sized,
    stored_count,
    tally,
    wait_for_count,
    wait_until,
)
from tests.stream_helpers import (
    consume_until_idle,
    incoming,
    members,
    publish_all,
    realtime_segments,
    scalar,
)

pytestmark = pytest.mark.chaos

# The emulator redelivers what a killed consumer had leased over minutes, in 100-message bursts;
# at full size F1's tail once paused more than 300 s and then came back (the stall limit is 900).
REDELIVERY_TIMEOUT = 900
# Seconds-level goals (F3, F4) are held only in `make chaos`, on a machine doing nothing else;
# in `make test` the same scenarios record the figure and assert correctness.
TIMING_GOALS = SCALE == "full"


def shop_traffic(seed: int, customers: int = 300, spread_minutes: int = 120):
    """Endless realistic traffic for `customers` shoppers, times spread over the recent past."""
    rng = random.Random(seed)
    now = utc_now()
    ids = itertools.cycle(range(customers))
    return ShopTraffic(lambda _: f"k{next(ids)}", seed=seed, concurrency=50,
                       clock=lambda: now - timedelta(minutes=rng.randint(0, spread_minutes)))


def shop_events(count: int, seed: int, **traffic) -> list[dict]:
    return list(itertools.islice(shop_traffic(seed, **traffic), count))


class Producer(threading.Thread):
    """Publishes in the background, at `rate` per second if given, until the events end or
    `finish()`; `sent` holds the id of every event handed to Pub/Sub."""

    def __init__(self, settings, events, rate: float | None = None):
        super().__init__(daemon=True)
        ensure_pubsub(settings)
        self.settings, self.events, self.rate = settings, events, rate
        self.sent: set[str] = set()
        self.failed: int | None = None
        self.stopping = threading.Event()
        self.start()

    def _events(self):
        for event in self.events:
            if self.stopping.is_set():
                return
            self.sent.add(event["event_id"])
            yield event

    def run(self) -> None:
        self.failed = publish(self.settings, self._events(), rate=self.rate).failed

    def finish(self) -> set[str]:
        """Stop now (endless traffic) and return what was sent."""
        self.stopping.set()
        return self.done()

    def done(self) -> set[str]:
        """Wait until every event is handed to Pub/Sub and return what was sent."""
        self.join()
        assert self.failed == 0, f"{self.failed} publishes failed"
        return self.sent


def drain(settings, tmp_path: Path, expected: int, name: str) -> float:
    """Run a fresh consumer until every expected event is stored; it must stop cleanly."""
    consumer = ConsumerProcess(tmp_path / f"{name}.log")
    try:
        took = wait_for_count(lambda: stored_count(settings), expected,
                              f"{expected} events stored", stall=REDELIVERY_TIMEOUT,
                              keep_going=consumer.alive)
    except AssertionError:
        consumer.stop(signal.SIGKILL)  # never leave a consumer running into the next scenario
        raise
    assert consumer.alive(), consumer.log()[-3000:]
    assert consumer.stop(signal.SIGTERM) == 0, consumer.log()[-3000:]
    return took


def test_f1_kill_dash_nine_at_random_moments(live, tmp_path):
    kills = sized(2, 20)  # F10 kills four more under three consumers in `make test`
    events = shop_events(sized(6_000, 200_000), seed=1)
    published = {e["event_id"] for e in events}
    producer = Producer(live, events, rate=sized(1_500, 2_500))
    rng = random.Random(1)
    for kill in range(kills):
        consumer = ConsumerProcess(tmp_path / f"f1-{kill}.log", "--batch-size", "200")
        # Let it start and commit for a random while: the kill lands before a commit, between
        # commit and ack, or during evaluation, wherever the batch happens to be.
        wait_until(lambda c=consumer: "committed batch" in c.log() or not c.alive(), 120,
                   "a committed batch")
        time.sleep(rng.uniform(0.05, 1.5))
        assert consumer.alive(), consumer.log()[-3000:]
        consumer.stop(signal.SIGKILL)
    assert producer.done() == published
    drain(live, tmp_path, len(published), "f1-final")

    counts = tally(live, published)
    off = drift(live)
    passed = counts["lost"] == counts["duplicates"] == 0 and not any(off.values())
    record("F1", counts, passed, kills=kills, membership_drift=sum(off.values()))
    assert counts["stored"] == len(published), counts
    assert counts["duplicates"] == 0
    assert off == dict.fromkeys(off, 0), "membership equals the batch recomputation"


def fuzzed_bad_messages(count: int, seed: int) -> list[bytes]:
    """Every kind of poison the stream must survive, in a seeded mix."""
    rng = random.Random(seed)
    now = utc_now()

    def good() -> dict:
        return {"event_id": f"bad-{rng.getrandbits(64):x}", "customer_id": "fuzz",
                "event_type": "page_view",
                "occurred_at": now.isoformat(timespec="milliseconds") + "Z",
                "properties": {"path": "/"}}

    def broken() -> bytes:
        kind = rng.randrange(12)
        body = good()
        if kind == 0:
            return b'{"event_id": ' + rng.randbytes(rng.randint(1, 40)).hex().encode()
        if kind == 1:
            return b'{"event_id": "\xff\xfe\xfd"}'
        if kind == 2:
            del body[rng.choice(["event_id", "customer_id", "event_type", "occurred_at"])]
        elif kind == 3:
            body[rng.choice(["extra", "userId", "'; drop table raw.events; --"])] = 1
        elif kind == 4:
            body[rng.choice(["customer_id", "occurred_at", "event_type"])] = rng.choice(
                [42, None, [], {"a": 1}, 3.5, True])
        elif kind == 5:
            body["event_type"] = "purchase"  # a planned type breaking the plan: blocked
            body["properties"] = rng.choice([{}, {"order_value": "12"}, {"order_value": -1}])
        elif kind == 6:
            body["occurred_at"] = rng.choice(["1899-12-31T00:00:00Z", "1970-01-01T00:00:00Z"])
        elif kind == 7:
            body["occurred_at"] = rng.choice(["2999-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
        elif kind == 8:
            body["properties"] = {"path": "x" * rng.randint(70_000, 200_000)}
        elif kind == 9:
            body["occurred_at"] = rng.choice(["yesterday", "2026-13-45T99:00:00Z", "1e9"])
        elif kind == 10:  # valid JSON that PostgreSQL cannot store in text or jsonb
            field = rng.choice(["customer_id", "event_id", "properties"])
            body[field] = {"path": "/a\u0000b"} if field == "properties" else "nul\u0000"
        else:
            return json.dumps([body]).encode()
        return json.dumps(body).encode()

    return [broken() for _ in range(count)]


def test_f2_fuzzed_poison_among_good_traffic(live):
    bad = fuzzed_bad_messages(sized(400, 10_000), seed=2)
    good = shop_events(sized(1_200, 40_000), seed=2)
    # SQL-looking strings in otherwise valid events are data, stored verbatim.
    good[0]["customer_id"] = "x'); drop table raw.events; --"
    messages: list[dict | bytes] = [*bad, *good]
    random.Random(2).shuffle(messages)
    publish_all(live, messages)
    publisher = pubsub_v1.PublisherClient()
    # Each carries its own Pub/Sub message id, the dead letters' key on PostgreSQL: stored once
    # each, however often redelivered. Some carry a NUL character in an attribute, which the
    # dead letter keeps.
    origins = ["fuzz" if n % 4 else "fuzz\u0000nul" for n in range(sized(20, 200))]
    attributes_only = [
        publisher.publish(topic_path(live, live.events_topic), b"", origin=origin)
        for origin in origins
    ]
    for future in attributes_only:
        future.result(timeout=30)

    consume_until_idle(live, idle=3.0)  # returns, rather than raising: it never exited

    published = {e["event_id"] for e in good}
    counts = tally(live, published, bad=len(bad) + len(attributes_only))
    letters = dead_letters(live)
    reasons = {reason.split(":")[0].split(" ")[0] for _, reason in letters}
    passed = counts["lost"] == 0 and counts["dead_lettered"] == len(bad) + len(attributes_only)
    record("F2", counts, passed, reasons=len(reasons))
    assert counts["stored"] == len(good), counts
    assert counts["dead_lettered"] == len(bad) + len(attributes_only), counts
    assert all(reason.strip() for _, reason in letters), "every dead letter says why"
    assert any("NUL character" in reason for _, reason in letters), letters[:5]
    kept = scalar(live, "select count(*) from raw.dead_letters where attributes->>'origin' = ?",
                  "fuzz\\u0000nul")
    assert kept == origins.count("fuzz\u0000nul"), "a NUL in an attribute kept, made visible"
    stored_as_data = scalar(live, "select count(*) from raw.events where customer_id = ?",
                            good[0]["customer_id"])
    assert stored_as_data == 1, "a SQL-looking value is stored verbatim, never executed"


def test_f3_nightly_run_while_streaming(live, tmp_path):
    """The nightly job (copy to the lake, dbt there, the nightly segments into PostgreSQL)
    takes the cores and the live tables' rows beside the stream: the stream goes on, and its
    lag comes back down once the job ends."""
    rate = sized(300, 1_000)
    ensure_pubsub(live)
    consumer = ConsumerProcess(tmp_path / "f3.log")
    wait_until(consumer.while_alive(lambda: latest_heartbeat_of(live) is not None), 120,
               "the consumer's first beat")
    producer = Producer(live, shop_traffic(seed=3, spread_minutes=1), rate=rate)
    wait_until(consumer.while_alive(lambda: latest_heartbeat_of(live).batches > 0), 120,
               "a stream before the run")
    during, started = len(producer.sent), time.monotonic()
    # The job's process inherits SEGOPS_POSTGRES_DSN, so it runs the lake's nightly.
    nightly = subprocess.run(
        [sys.executable, "-c", "from orchestration.run_now import run_job; "
         "from segops.settings import load_settings; "
         "raise SystemExit(0 if run_job(load_settings(), 'nightly_segments').success else 1)"],
        capture_output=True, text=True, timeout=600,
    )
    assert nightly.returncode == 0, nightly.stdout[-3000:] + nightly.stderr[-3000:]
    finished, nightly_seconds = utc_now(), time.monotonic() - started
    published_during = len(producer.sent) - during
    # The stream goes on at the same rate: its lag must come back down, not just stop.
    recovery = wait_until(consumer.while_alive(lambda: lag_ms(live, since=finished) < 1_000),
                          180, "the consumer's lag to return under a second")
    published = producer.finish()
    wait_until(consumer.while_alive(lambda: stored_count(live) >= len(published)), 120,
               "every event stored")
    assert consumer.stop(signal.SIGTERM) == 0

    counts = tally(live, published)
    in_lake = lake_event_count(live)
    passed = (counts["lost"] == counts["duplicates"] == 0 and in_lake > 0
              and (recovery <= 10 or not TIMING_GOALS))
    record("F3", counts, passed, lag_recovered_seconds=round(recovery, 1), rate=rate,
           nightly_seconds=round(nightly_seconds, 1), published_during_run=published_during,
           copied_to_lake=in_lake)
    assert counts["lost"] == counts["duplicates"] == 0, counts
    assert published_during > 0, "events streamed while the job ran"
    assert 0 < in_lake <= counts["stored"], "the job copied what the stream had stored"
    if TIMING_GOALS:
        assert recovery <= 10, f"lag returned to normal {recovery:.1f}s after the run"


def latest_heartbeat_of(settings):
    """The most recent beat of any consumer (each scenario runs one), None before the first."""
    with psycopg.connect(settings.postgres_dsn) as con:
        beats = heartbeats(con)
    return beats[0] if beats else None


def lake_event_count(settings) -> int:
    with lake_connection(settings.postgres_dsn, settings.lake_data_path, read_only=True) as con:
        return con.execute("select count(*) from raw.events").fetchone()[0]


def lag_ms(settings, since: datetime) -> float:
    """The lag of the latest batch committed after `since`; infinite before there is one."""
    beat = latest_heartbeat_of(settings)
    fresh = beat and beat.last_batch_at and beat.last_batch_at > since
    return beat.lag_ms if fresh and beat.lag_ms is not None else float("inf")


def test_f4_sigterm_mid_stream_drains_and_exits_zero(live, tmp_path):
    events = shop_events(sized(2_000, 50_000), seed=4)
    published = {e["event_id"] for e in events}
    producer = Producer(live, events, rate=sized(1_000, 2_000))
    consumer = ConsumerProcess(tmp_path / "f4.log", "--batch-size", "200")
    wait_until(lambda: "committed batch" in consumer.log(), 120, "a committed batch")
    started = time.monotonic()
    code = consumer.stop(signal.SIGTERM)
    exit_seconds = time.monotonic() - started
    assert producer.done() == published
    drain(live, tmp_path, len(published), "f4-drain")

    counts = tally(live, published)
    passed = (code == 0 and (exit_seconds <= 10 or not TIMING_GOALS)
              and counts["lost"] == counts["duplicates"] == 0)
    record("F4", counts, passed, exit_code=code, exit_seconds=round(exit_seconds, 2))
    assert code == 0, consumer.log()[-3000:]
    if TIMING_GOALS:
        assert exit_seconds <= 10
    assert counts["lost"] == counts["duplicates"] == 0, counts


def test_f5_emulator_restart_under_the_consumer(manifest, live_dsn, tmp_path, monkeypatch):
    port = free_port()
    emulator = PubSubEmulator(port=port)  # its own: the session's must not restart
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.start())
    monkeypatch.setenv("SEGOPS_PROJECT", "chaos-f5")
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    settings = load_settings()
    try:
        before = shop_events(sized(500, 5_000), seed=5)
        publish_all(settings, before)
        consumer = ConsumerProcess(tmp_path / "f5.log")
        wait_until(lambda: stored_count(settings) >= len(before), 120,
                   "the events before the restart")
        emulator.stop()
        wait_until(lambda: "cannot reach the Pub/Sub emulator" in consumer.log(), 60,
                   "the consumer to say Pub/Sub is gone")
        assert consumer.alive(), consumer.log()[-3000:]
        emulator = PubSubEmulator(port=port)
        emulator.start()
        ensure_pubsub(settings)  # the emulator forgets topics and subscriptions when it stops
        after = shop_events(sized(500, 5_000), seed=55)
        publish_all(settings, after)
        reconnected = wait_until(
            lambda: stored_count(settings) >= len(before) + len(after), 180,
            "the events after the restart")
        assert consumer.alive(), consumer.log()[-3000:]
        assert consumer.stop(signal.SIGTERM) == 0
    finally:
        emulator.stop()

    log = consumer.log()
    outage_lines = log.count("cannot reach the Pub/Sub emulator")
    back = log.count("Pub/Sub is back")
    published = {e["event_id"] for e in before + after}
    counts = tally(settings, published)
    passed = counts["lost"] == counts["duplicates"] == 0 and outage_lines == 1 and back >= 1
    record("F5", counts, passed, outage_log_lines=outage_lines,
           caught_up_seconds=round(reconnected, 1))
    assert counts["lost"] == counts["duplicates"] == 0, counts
    assert (outage_lines, back) == (1, 1), "one clear line for the outage and one for its end"


OUTAGE_LINE = "PostgreSQL unreachable"
BACK_LINE = "PostgreSQL is back"


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A server this test may stop: the session's serves other tests meanwhile."""
    with temporary_postgres("segops-f6-postgres-") as server:
        with psycopg.connect(server.dsn) as con:
            ensure_live_schema(con)
        yield server


@pytest.fixture
def settings_on(own_postgres: LocalPostgres, manifest: Settings, pubsub: Settings,
                monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This test's manifest and Pub/Sub project, the live state on its own server; the
    consumer process inherits them."""
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", own_postgres.dsn)
    return load_settings()


def test_f6_postgres_restarts_under_the_consumer(own_postgres, settings_on, tmp_path):
    settings = settings_on
    outage = sized(15, 60)
    ensure_pubsub(settings)
    consumer = ConsumerProcess(tmp_path / "f6.log", "--batch-size", "200")
    # At 1,000/s (60,000 events held back at full size) two runs on 2 busy cores stored nothing
    # new for minutes after the first catch-up: every delivery was a redelivery of a stored
    # event, the pattern F1's notes describe (docs/reliability.md). F6 is about the restart.
    traffic = Producer(settings, shop_traffic(seed=6), rate=sized(200, 250))
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


def test_f7_duplicates_and_events_out_of_time_order(live):
    events = shop_events(sized(1_000, 20_000), seed=7, spread_minutes=60)
    published = {e["event_id"] for e in events}
    shuffled = events * 3
    random.Random(7).shuffle(shuffled)  # up to an hour out of order, each one three times
    publish_all(live, shuffled)
    consume_until_idle(live, idle=3.0)

    counts = tally(live, published)
    off = drift(live)
    passed = counts["lost"] == counts["duplicates"] == 0 and not any(off.values())
    record("F7", {**counts, "published": len(shuffled)}, passed,
           membership_drift=sum(off.values()))
    assert counts["stored"] == len(published) and counts["duplicates"] == 0, counts
    assert off == dict.fromkeys(off, 0), "membership as if the events had arrived in order"


def sensor_checks(settings) -> dict[str, dg.AssetCheckEvaluation]:
    """The real-time sensor's stream-health check of each segment, from a fresh cursor."""
    sensor = build_realtime_sensor(realtime_segments(settings))
    with dg.build_sensor_context(
        resources={"warehouse": warehouse_resource(settings)}
    ) as context:
        result = sensor(context)
    return {e.asset_key.path[-1]: e for e in result.asset_events
            if isinstance(e, dg.AssetCheckEvaluation)}


BROKEN_SEGMENT = """
select customer_id, cast(event_type as integer) as impossible
from {{ ref('stg_events') }}
"""
FIXED_SEGMENT = """
select customer_id, count(*) as events
from {{ ref('stg_events') }}
group by customer_id
"""


def test_f8_a_segment_that_fails_at_run_time_is_isolated(settings, live_dsn, tmp_path,
                                                          monkeypatch):
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    model = project / "models" / "segments" / "every_active_customer.sql"
    model.write_text(BROKEN_SEGMENT)
    (project / "models" / "segments" / "every_active_customer.yml").write_text(
        "models:\n  - name: every_active_customer\n    config:\n      materialized: view\n"
        "      meta:\n        segment:\n          refresh: realtime\n"
    )
    monkeypatch.setenv("SEGOPS_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    settings = load_settings()
    compile_segments(settings)
    consumer = LiveConsumer(settings, ConsumerConfig(publish_changes=False,
                                                     retry_failed_seconds=0))
    with consumer.session():
        consumer.start()
        events = shop_events(sized(300, 3_000), seed=8, spread_minutes=30)
        for start in range(0, len(events), 100):
            consumer.process([incoming(e) for e in events[start:start + 100]])
        heartbeat = latest_heartbeat_of(settings)
        assert "every_active_customer" in heartbeat.failed_segments
        assert "Conversion Error" in heartbeat.failed_segments["every_active_customer"]
        checks = sensor_checks(settings)
        assert not checks["every_active_customer"].passed, "the Dagster sensor shows it failed"
        assert "Conversion Error" in checks["every_active_customer"].description
        assert checks["high_intent_browsers"].passed
        healthy = (members(settings, "high_intent_browsers")
                   or members(settings, "recent_purchasers"))
        assert healthy, "the other segments kept evaluating"

        model.write_text(FIXED_SEGMENT)  # the analyst ships the fix
        compile_segments(settings)
        consumer.maintain()  # what the loop does between batches: it sees the new manifest
        consumer.process([])  # the loop's next round, whose beat says the segment recovered
        customers = {e["customer_id"] for e in events}
        fixed = set(members(settings, "every_active_customer"))
        heartbeat = latest_heartbeat_of(settings)
        published = {e["event_id"] for e in events}
        counts = tally(settings, published)
        passed = fixed == customers and "every_active_customer" not in heartbeat.failed_segments
        record("F8", counts, passed, failed_then_fixed=passed)
        assert fixed == customers
        assert "every_active_customer" not in heartbeat.failed_segments
        assert sensor_checks(settings)["every_active_customer"].passed
        assert counts["lost"] == 0


def test_f9_a_manifest_changing_under_the_consumer_never_stops_it(
        manifest, live_dsn, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="streaming")
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    monkeypatch.setenv("SEGOPS_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    settings = load_settings()
    consumer = LiveConsumer(settings, ConsumerConfig(publish_changes=False))
    with consumer.session():
        consumer.start()
        running = dict(consumer.segments.evaluator.queries)
        events = shop_events(400, seed=9, spread_minutes=30)  # four batches: one per step below
        batches = iter([events[start:start + 100] for start in range(0, len(events), 100)])

        def stream_goes_on() -> None:
            outcome = consumer.process([incoming(e) for e in next(batches)])
            assert outcome.stored == outcome.received, outcome
            consumer.maintain()
            assert consumer.segments.evaluator.queries == running and not consumer.segments.failed

        # A reader can catch dbt halfway through writing the manifest (not written atomically).
        complete = settings.manifest_path.read_bytes()
        settings.manifest_path.write_bytes(complete[: len(complete) // 2])
        stream_goes_on()
        stream_goes_on()  # read once, then left alone until the file changes again
        assert caplog.text.count("is not valid JSON") == 1

        # A deploy that parses but does not compile: dbt rewrites the manifest as it fails.
        (project / "models" / "segments" / "every_active_customer.yml").write_text(
            "models:\n  - name: every_active_customer\n    config:\n      materialized: view\n"
            "      meta:\n        segment:\n          refresh: realtime\n"
        )
        model = project / "models" / "segments" / "every_active_customer.sql"
        model.write_text("select customer_id from {{ ref('stg_events') }} where {{ no_such() }}")
        run_dbt(settings, ["parse"])
        stream_goes_on()
        stream_goes_on()  # not a failing compile on every batch
        assert caplog.text.count("compiling the real-time segments") == 1
        assert "'no_such' is undefined" in caplog.text

        model.write_text(FIXED_SEGMENT)  # the fix ships
        run_dbt(settings, ["parse"])
        consumer.maintain()
        assert "re-evaluating every_active_customer" in caplog.text
        customers = {e["customer_id"] for e in events}
        assert set(members(settings, "every_active_customer")) == customers
        published = {e["event_id"] for e in events}
        counts = tally(settings, published)
        passed = counts["lost"] == counts["duplicates"] == 0
        record("F9", counts, passed, bad_manifests_survived=2)
        assert passed, counts


def test_f10_three_consumers_one_killed_at_random_again_and_again(live, tmp_path):
    kills = sized(4, 20)
    # At full size a shop's many customers, ten events each as in the demo's shop: 200,000 on
    # 300 customers made every batch read hundreds of events per customer, a hot customer's
    # cost that B7h measures, not a consumer's death.
    events = shop_events(sized(9_000, 200_000), seed=10, customers=sized(300, 20_000))
    published = {e["event_id"] for e in events}
    producer = Producer(live, events, rate=sized(1_500, 2_500))
    rng = random.Random(10)
    started = itertools.count()

    def consumer() -> ConsumerProcess:
        return ConsumerProcess(tmp_path / f"f10-{next(started)}.log", "--batch-size", "200")

    consumers = [consumer() for _ in range(3)]
    try:
        for _ in range(kills):
            victim = rng.randrange(3)
            wait_until(consumers[victim].while_alive(
                lambda c=consumers[victim]: "committed batch" in c.log()), 120,
                "a committed batch")
            time.sleep(rng.uniform(0.05, 1.5))
            consumers[victim].stop(signal.SIGKILL)
            consumers[victim] = consumer()
        assert producer.done() == published
        wait_for_count(lambda: stored_count(live), len(published),
                       f"{len(published)} events stored", stall=REDELIVERY_TIMEOUT,
                       keep_going=lambda: all(c.alive() for c in consumers))
    finally:
        codes = [c.stop(signal.SIGTERM) for c in consumers]
    assert codes == [0, 0, 0], [c.log()[-3000:] for c in consumers]

    counts = tally(live, published)
    off = drift(live)
    disordered = live_changes_alternate(live.postgres_dsn)
    passed = (counts["lost"] == counts["duplicates"] == disordered == 0
              and not any(off.values()))
    record("F10", counts, passed, kills=kills, consumers=3,
           membership_drift=sum(off.values()), changes_out_of_turn=disordered)
    assert counts["stored"] == len(published), counts
    assert counts["duplicates"] == 0
    assert off == dict.fromkeys(off, 0), "membership equals the batch recomputation"
    assert disordered == 0, "every enter and exit recorded once, in turn"
    with psycopg.connect(live.postgres_dsn) as con:
        segments = {row[0] for row in con.execute(
            "select distinct segment from segops.segment_membership").fetchall()}
    assert len(segments) >= 3, f"the traffic fills the segments compared: {segments}"
