"""One membership asset per segment: reconciles the segment's rows into the membership tables.

For a real-time segment the same step measures parity (the stream's membership against a batch
evaluation at the stream's last "now") before reconciling, and reports the consumer's heartbeat.
"""


from collections import Counter
from datetime import datetime

import dagster as dg
import duckdb
import psycopg

from orchestration.membership_checks import (
    heartbeat_result,
    membership_key,
    parity_result,
    realtime_check_specs,
)
from orchestration.resources import WarehouseResource
from segops.catalog import Catalog, Segment
from segops.clock import set_session_now, utc_now
from segops.customers import queue_reevaluation
from segops.errors import SegOpsError
from segops.heartbeat import latest_heartbeat
from segops.live_membership import apply_batch, batch_members, held_count, live_drift, stream_state
from segops.membership import (
    SegmentContractError,
    SegmentFailed,
    apply_membership,
    changed_customers,
    members_query,
    stage_found,
)
from segops.parity import measure_drift
from segops.warehouse import transaction

SAMPLE_SIZE = 5


def build_membership_asset(segment: Segment, catalog: Catalog) -> dg.AssetsDefinition:
    """A real-time segment that reads nightly segments reconciles after them; a nightly segment
    that real-time segments read queues its changed members for the stream to re-evaluate."""
    realtime = segment.refresh == "realtime"
    names = {s.unique_id: s.name for s in catalog.segments.values()}
    reads = sorted(names[m.unique_id] for m in catalog.upstream(segment.unique_id,
                                                                 through_nightly=False)
                   if m.unique_id in catalog.nightly_segment_ids) if realtime else []
    readers = catalog.realtime_readers(segment)

    @dg.asset(
        key=membership_key(segment.name),
        deps=[dg.AssetKey(["segments", segment.name]), *map(membership_key, reads)],
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
        if warehouse.postgres_dsn:
            return _membership_in_postgres(context, warehouse, segment, wall, bool(readers))
        try:
            with warehouse.get_connection() as con:
                heartbeat = latest_heartbeat(con) if realtime else None
                drift = measure_drift(con, segment, heartbeat.evaluated_at) if heartbeat else None
                # A live stream has evaluated everyone up to its watermark: reconcile there and
                # leave later time-driven changes to it. Otherwise bring membership to now.
                fresh = heartbeat is not None and not heartbeat.is_stale(wall)
                at = heartbeat.evaluated_at if fresh else wall
                metadata = _reconcile(con, segment, at, readers)
        except (SegmentContractError, SegmentFailed) as error:
            raise dg.Failure(description=str(error)) from None
        context.log.info(
            f"{segment.name}: {metadata['size'].value} members, "
            f"{metadata['enters'].value} entered, {metadata['exits'].value} exited"
        )
        checks = [parity_result(drift), heartbeat_result(heartbeat, wall)] if realtime else []
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return membership


def _membership_in_postgres(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                            segment: Segment, wall: datetime,
                            has_readers: bool) -> dg.MaterializeResult:
    """A nightly segment applied to PostgreSQL's membership (the customers it moved queued for
    the real-time segments that read it); a real-time one, which the stream keeps there,
    compared with the batch at the time the stream's sweep reached."""
    realtime = segment.refresh == "realtime"
    with psycopg.connect(warehouse.postgres_dsn, autocommit=True) as pg:
        heartbeat, swept = stream_state(pg)
        at = swept if realtime and swept else wall
        try:
            with warehouse.get_connection() as con:
                found = batch_members(con, segment, at)
        except (duckdb.Error, SegOpsError) as error:
            raise dg.Failure(description=f"{segment.name}: {error}") from None
        if realtime:
            drift = live_drift(pg, segment, found, at) if swept else None
            changes: Counter = Counter()
        else:
            changes = apply_batch(pg, segment.name, found, at, has_readers=has_readers)
        size = held_count(pg, segment.name)
    context.log.info(f"{segment.name}: {size} members, "
                     f"{changes[(segment.name, 'enter')]} entered, "
                     f"{changes[(segment.name, 'exit')]} exited")
    metadata = {
        "size": dg.MetadataValue.int(size),
        "enters": dg.MetadataValue.int(changes[(segment.name, "enter")]),
        "exits": dg.MetadataValue.int(changes[(segment.name, "exit")]),
        "evaluated_at": dg.MetadataValue.text(at.isoformat(sep=" ")),
        "kept_by": dg.MetadataValue.text("the stream" if realtime else "the nightly job"),
    }
    checks = [parity_result(drift), heartbeat_result(heartbeat, wall)] if realtime else []
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def _reconcile(con: duckdb.DuckDBPyConnection, segment: Segment, at: datetime,
               readers: list[str]) -> dict:
    set_session_now(con, at)
    with transaction(con):
        stage_found(con, {segment.name: members_query(con, segment.name, segment.relation)})
        (delta,) = apply_membership(
            con, segments=[segment.name], scope=None, source="batch", changed_at=at
        )
        if readers:
            queue_reevaluation(con, changed_customers(con), f"nightly:{segment.name}")
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
