"""The real-time side in the Dagster UI: the change log, read by cursor, as runless events."""

import json

import dagster as dg

from orchestration.membership_checks import STREAM_HEARTBEAT, heartbeat_result, membership_key
from orchestration.resources import WarehouseResource
from segops.catalog import Segment
from segops.clock import utc_now
from segops.heartbeat import latest_heartbeat
from segops.live_connection import PostgresUnreachable


def build_realtime_sensor(segments: list[Segment]) -> dg.SensorDefinition:
    names = {segment.name for segment in segments}

    @dg.sensor(
        name="realtime_segments_sensor",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reports each real-time segment's enters and exits since the last "
        "evaluation, and flags a consumer whose heartbeat went stale.",
    )
    def realtime_segments_sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        cursor = json.loads(context.cursor) if context.cursor else {"change_id": 0}
        try:
            with warehouse.read_live_state() as con:
                changes = con.execute(
                    """
                    select c.segment, count(*) filter (where c.change = 'enter'),
                           count(*) filter (where c.change = 'exit'), max(c.change_id),
                           max(c.changed_at),
                           (select count(*) from segops.segment_membership as m
                            where m.segment = c.segment)
                    from segops.segment_membership_changes as c
                    where c.change_id > ? and c.source = 'realtime'
                    group by c.segment order by c.segment
                    """,
                    [cursor["change_id"]],
                ).fetchall()
                heartbeat = latest_heartbeat(con)
        except PostgresUnreachable as error:
            return dg.SkipReason(str(error))

        wall = utc_now()
        events: list = [
            dg.AssetMaterialization(
                asset_key=membership_key(segment),
                description="real-time membership changes reported by the streaming consumer",
                metadata={
                    "size": dg.MetadataValue.int(size),
                    "enters": dg.MetadataValue.int(enters),
                    "exits": dg.MetadataValue.int(exits),
                    "lag_seconds": (wall - last_changed_at).total_seconds(),
                    "consumer_lag_ms": (heartbeat.lag_ms or 0.0) if heartbeat else 0.0,
                    "source": "realtime",
                },
            )
            for segment, enters, exits, _, last_changed_at, size in changes
            if segment in names
        ]
        last_change_id = max((row[3] for row in changes), default=cursor["change_id"])

        check = heartbeat_result(heartbeat, wall)
        healthy = bool(check.passed)
        failed = heartbeat.failed_segments if heartbeat else {}
        # Report the stream's health per segment whenever it changes: a stale consumer fails
        # every segment's check, a segment whose SQL fails in the stream fails its own.
        if healthy != cursor.get("healthy") or sorted(failed) != cursor.get("failed", []):
            events += [
                dg.AssetCheckEvaluation(
                    asset_key=membership_key(name),
                    check_name=STREAM_HEARTBEAT,
                    passed=healthy and name not in failed,
                    severity=check.severity,
                    description=(f"the stream cannot evaluate {name}: {failed[name]}"
                                 if name in failed else check.description),
                    metadata=check.metadata,
                )
                for name in sorted(names)
            ]
        context.log.info(f"{len(changes)} segments changed since change {cursor['change_id']}")
        return dg.SensorResult(
            asset_events=events,
            cursor=json.dumps(
                {"change_id": last_change_id, "healthy": healthy, "failed": sorted(failed)}
            ),
            skip_reason=None if healthy else f"streaming consumer unhealthy: {check.description}",
        )

    return realtime_segments_sensor
