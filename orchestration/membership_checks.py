"""The membership assets' keys and the checks on real-time segments, reported both by the
nightly's membership steps and by the real-time sensor: parity with the batch, and the
consumer's heartbeat."""

from datetime import datetime

import dagster as dg

from segops.catalog import Segment
from segops.heartbeat import STALE_AFTER, Heartbeat
from segops.parity import Drift

PARITY = "parity"
STREAM_HEARTBEAT = "stream_heartbeat"


def membership_key(segment_name: str) -> dg.AssetKey:
    return dg.AssetKey(["membership", segment_name])


def realtime_check_specs(segment: Segment) -> list[dg.AssetCheckSpec]:
    key = membership_key(segment.name)
    return [
        dg.AssetCheckSpec(
            PARITY,
            asset=key,
            description="The stream's membership equals a batch evaluation at the same now.",
        ),
        dg.AssetCheckSpec(
            STREAM_HEARTBEAT,
            asset=key,
            description=f"The streaming consumer beat within the last {STALE_AFTER}.",
        ),
    ]


def parity_result(drift: Drift | None) -> dg.AssetCheckResult:
    if drift is None:
        return dg.AssetCheckResult(
            check_name=PARITY, passed=True, description="no streaming consumer has run yet",
            metadata={"drift": 0},
        )
    return dg.AssetCheckResult(
        check_name=PARITY,
        passed=drift.total == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{drift.total} customers differ between stream and batch",
        metadata={
            "drift": drift.total,
            "missing_from_stream": drift.missing_count,
            "unexpected_in_stream": drift.unexpected_count,
            "batch_size": drift.batch_size,
            "evaluated_at": drift.evaluated_at.isoformat(sep=" "),
            "sample_missing": ", ".join(drift.missing),
            "sample_unexpected": ", ".join(drift.unexpected),
        },
    )


def heartbeat_result(heartbeat: Heartbeat | None, wall: datetime) -> dg.AssetCheckResult:
    if heartbeat is None:
        return dg.AssetCheckResult(
            check_name=STREAM_HEARTBEAT, passed=False, severity=dg.AssetCheckSeverity.WARN,
            description="no streaming consumer has ever run (`segops stream`)",
        )
    age = heartbeat.age(wall).total_seconds()
    failed = heartbeat.failed_segments
    return dg.AssetCheckResult(
        check_name=STREAM_HEARTBEAT,
        passed=not heartbeat.is_stale(wall),
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"consumer {heartbeat.consumer_id} last beat {age:.0f}s ago"
            + (f"; failing segments: {', '.join(failed)}" if failed else "")
        ),
        metadata={
            "heartbeat_age_seconds": age,
            "lag_ms": heartbeat.lag_ms or 0.0,
            "events": heartbeat.events,
            "dead_letters": heartbeat.dead_letters,
            "evaluated_at": heartbeat.evaluated_at.isoformat(sep=" "),
        },
    )
