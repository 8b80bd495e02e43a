"""One membership asset per segment: reconciles the segment's rows into the membership tables.

For a real-time segment the same step measures parity (the stream's membership against a batch
evaluation at the stream's last "now") before reconciling, and reports the consumer's heartbeat.
"""


from datetime import datetime

import dagster as dg
import duckdb

from orchestration.resources import WarehouseResource
from segops.catalog import Segment
from segops.clock import set_session_now, utc_now
from segops.heartbeat import STALE_AFTER, Heartbeat, latest_heartbeat
from segops.membership import (
    SegmentContractError,
    SegmentFailed,
    apply_membership,
    members_query,
    stage_found,
)
from segops.parity import Drift, measure_drift
from segops.warehouse import transaction

SAMPLE_SIZE = 5
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


def build_membership_asset(segment: Segment) -> dg.AssetsDefinition:
    realtime = segment.refresh == "realtime"

    @dg.asset(
        key=membership_key(segment.name),
        deps=[dg.AssetKey(["segments", segment.name])],
        group_name="membership",
        kinds={"duckdb"},
        description=f"Who is in `{segment.name}` now, with every enter and exit. "
        + segment.description,
        tags={"segops/refresh": segment.refresh or "unknown"},
        metadata={"refresh": segment.refresh or "unknown", "window": segment.window or "none"},
        check_specs=realtime_check_specs(segment) if realtime else None,
    )
    def membership(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        if segment.problems:
            raise dg.Failure(description="\n".join(segment.problems))
        wall = utc_now()
        try:
            with warehouse.get_connection() as con:
                heartbeat = latest_heartbeat(con) if realtime else None
                drift = measure_drift(con, segment, heartbeat.evaluated_at) if heartbeat else None
                # A live stream has evaluated everyone up to its watermark: reconcile there and
                # leave later time-driven changes to it. Otherwise bring membership to now.
                fresh = heartbeat is not None and not heartbeat.is_stale(wall)
                at = heartbeat.evaluated_at if fresh else wall
                metadata = _reconcile(con, segment, at)
        except (SegmentContractError, SegmentFailed) as error:
            raise dg.Failure(description=str(error)) from None
        context.log.info(
            f"{segment.name}: {metadata['size'].value} members, "
            f"{metadata['enters'].value} entered, {metadata['exits'].value} exited"
        )
        checks = [parity_result(drift), heartbeat_result(heartbeat, wall)] if realtime else []
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return membership


def _reconcile(con: duckdb.DuckDBPyConnection, segment: Segment, at: datetime) -> dict:
    set_session_now(con, at)
    with transaction(con):
        stage_found(con, {segment.name: members_query(con, segment.name, segment.relation)})
        (delta,) = apply_membership(
            con, segments=[segment.name], scope=None, source="batch", changed_at=at
        )
    sample = con.execute(
        """
        select customer_id, entered_at, attributes from segops.segment_membership
        where segment = ? order by entered_at desc, customer_id limit ?
        """,
        [segment.name, SAMPLE_SIZE],
    ).df()
    return {
        "size": dg.MetadataValue.int(delta.size),
        "enters": dg.MetadataValue.int(delta.enters),
        "exits": dg.MetadataValue.int(delta.exits),
        "evaluated_at": dg.MetadataValue.text(at.isoformat(sep=" ")),
        "sample": dg.MetadataValue.md(sample.to_markdown(index=False)),
    }


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
