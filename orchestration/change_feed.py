"""The nightly batch's membership changes, published to downstream tools on `segment-changes`.

Its own job rather than a step of the nightly run, so a Pub/Sub outage never fails a rebuild:
a sensor notices unpublished batch changes (right after a nightly run, or left over by a failed
publish) and requests the job, which publishes them by outbox.
"""

import json
import time

import dagster as dg

from orchestration.membership_checks import membership_key
from orchestration.resources import WarehouseResource
from segops.catalog import Segment
from segops.change_feed import publish_backlog
from segops.errors import SegOpsError
from segops.settings import Settings
from segops.warehouse import WarehouseBusy, WarehouseMissing

CHANGE_FEED = dg.AssetKey(["activation", "segment_changes"])
RETRY_AFTER_SECONDS = 600  # a backlog a failed run left is requested again after this long


def build_change_feed_asset(settings: Settings, segments: list[Segment]) -> dg.AssetsDefinition:
    @dg.asset(
        key=CHANGE_FEED,
        deps=[membership_key(segment.name) for segment in segments],
        group_name="activation",
        kinds={"pubsub"},
        description="Publishes the batch's enters and exits to the segment-changes topic "
        "(ordered per customer; a change is marked published only once Pub/Sub accepted it).",
    )
    def segment_changes(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        try:
            published = publish_backlog(settings, "batch")
        except SegOpsError as error:
            raise dg.Failure(description=str(error)) from None
        context.log.info(f"published {sum(published.values())} batch changes")
        return dg.MaterializeResult(
            metadata={
                "published": dg.MetadataValue.int(sum(published.values())),
                "by_segment": dg.MetadataValue.json(dict(sorted(published.items()))),
                "topic": settings.changes_topic,
            }
        )

    return segment_changes


publish_changes_job = dg.define_asset_job(
    name="publish_segment_changes",
    selection=dg.AssetSelection.assets(CHANGE_FEED),
    description="Publish unpublished batch membership changes to the segment-changes topic.",
    executor_def=dg.in_process_executor,
)


@dg.sensor(
    name="batch_changes_sensor",
    job=publish_changes_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a publish run when the batch left membership changes unpublished.",
)
def batch_changes_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    if warehouse.postgres_dsn:
        return dg.SkipReason("the stream's outbox publishes every change kept in PostgreSQL")
    try:
        with warehouse.read_live_state(timeout=10) as con:
            pending, newest = con.execute(
                "select count(*), max(change_id) from segops.segment_membership_changes "
                "where source = 'batch' and published_at is null"
            ).fetchone()
    except WarehouseBusy:
        return dg.SkipReason("the warehouse stayed locked; will look again next time")
    except WarehouseMissing:
        return dg.SkipReason("no warehouse yet")
    if not pending:
        return dg.SkipReason("every batch change is published")

    # One request per backlog; a backlog that outlives its run (Pub/Sub was down) is asked for
    # again after RETRY_AFTER_SECONDS rather than on every tick.
    cursor = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    if cursor.get("newest") == newest and now - cursor.get("at", 0.0) < RETRY_AFTER_SECONDS:
        return dg.SkipReason(f"{pending} batch changes already requested")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(tags={"segops/pending_changes": str(pending)})],
        cursor=json.dumps({"newest": newest, "at": now}),
    )
