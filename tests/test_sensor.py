"""The real-time sensor, evaluated with build_sensor_context on the live state in PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import dagster as dg

from demo.traffic import event
from orchestration.membership_checks import STREAM_HEARTBEAT
from orchestration.realtime import build_realtime_sensor
from orchestration.resources import warehouse_resource
from segops.clock import utc_now
from tests.live_helpers import started
from tests.stream_helpers import incoming, realtime_segments


def evaluate(sensor: dg.SensorDefinition, settings, cursor: str | None) -> dg.SensorResult:
    with dg.build_sensor_context(
        cursor=cursor, resources={"warehouse": warehouse_resource(settings)}
    ) as context:
        return sensor(context)


def test_sensor_reports_changes_since_its_cursor_and_advances_it(live_shop):
    sensor = build_realtime_sensor(realtime_segments(live_shop))
    now = utc_now()
    with started(live_shop) as consumer:
        consumer.process([incoming(event("buyer", "purchase", now, order_value=5.0,
                                         order_id="o"))])

        first = evaluate(sensor, live_shop, None)
        materialized = {
            e.asset_key.to_user_string(): e for e in first.asset_events
            if isinstance(e, dg.AssetMaterialization)
        }
        assert set(materialized) == {"membership/recent_purchasers"}
        metadata = materialized["membership/recent_purchasers"].metadata
        assert (metadata["size"].value, metadata["enters"].value,
                metadata["exits"].value) == (1, 1, 0)
        checks = [e for e in first.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert checks and all(c.passed and c.check_name == STREAM_HEARTBEAT for c in checks)
        cursor = json.loads(first.cursor)
        assert cursor["change_id"] > 0

        second = evaluate(sensor, live_shop, first.cursor)
        assert second.asset_events == [], "nothing new since the cursor, health unchanged"
        assert json.loads(second.cursor) == cursor

        consumer.process([incoming(event("newbie", "signup", now))])
        third = evaluate(sensor, live_shop, second.cursor)
    assert [e.asset_key.to_user_string() for e in third.asset_events] == [
        "membership/new_signups_no_purchase"
    ]
    assert json.loads(third.cursor)["change_id"] > cursor["change_id"]


def test_a_stale_heartbeat_is_reported_not_silent(live_shop, monkeypatch):
    """The clock moves on past the heartbeat's age limit with no batch: every real-time
    segment's check fails, and the sensor says why it skips."""
    sensor = build_realtime_sensor(realtime_segments(live_shop))
    with started(live_shop):
        pass  # a consumer beats when it starts
    healthy = evaluate(sensor, live_shop, None)
    assert healthy.skip_reason is None

    monkeypatch.setenv("SEGOPS_NOW", (utc_now() + timedelta(minutes=5)).isoformat())
    stale = evaluate(sensor, live_shop, healthy.cursor)
    assert stale.skip_reason is not None
    assert "last beat" in stale.skip_reason.skip_message
    failed = [e for e in stale.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert failed and not any(c.passed for c in failed)
    assert {c.asset_key.to_user_string() for c in failed} == {
        f"membership/{s.name}" for s in realtime_segments(live_shop)
    }
