"""One membership asset per segment: a nightly segment's rows reconciled into PostgreSQL's
membership tables; for a real-time segment, which the stream keeps there, parity (the stream's
membership against a batch evaluation at the time the stream's sweep reached) and the
consumers' heartbeat.
"""


from collections import Counter
from datetime import datetime

import dagster as dg
import duckdb
import pandas as pd

from orchestration.membership_checks import (
    heartbeat_result,
    membership_key,
    parity_result,
    realtime_check_specs,
)
from orchestration.resources import WarehouseResource
from segops.catalog import Catalog, Segment
from segops.clock import utc_now
from segops.errors import SegOpsError
from segops.live_connection import connect
from segops.live_membership import (
    apply_batch,
    evaluate_batch,
    held_count,
    live_drift,
    stream_state,
)

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
        return _reconcile(context, warehouse, segment, utc_now(), bool(readers))

    return membership


def _reconcile(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
               segment: Segment, wall: datetime, has_readers: bool) -> dg.MaterializeResult:
    """A nightly segment applied to PostgreSQL's membership (the customers it moved queued for
    the real-time segments that read it); a real-time one, which the stream keeps there,
    compared with the batch at the time the stream's sweep reached."""
    realtime = segment.refresh == "realtime"
    try:
        pg = connect(warehouse.postgres_dsn, autocommit=True)
    except SegOpsError as error:
        raise dg.Failure(description=str(error)) from None
    with pg:
        heartbeat, swept = stream_state(pg)
        at = swept if realtime and swept else wall
        try:
            with warehouse.get_connection() as con:
                evaluate_batch(con, segment, at)
                if realtime:
                    changes: Counter = Counter()
                    drift = live_drift(pg, con, segment, at) if swept else None
                else:
                    changes = apply_batch(pg, con, segment.name, at, has_readers=has_readers)
        except (duckdb.Error, SegOpsError) as error:
            raise dg.Failure(description=f"{segment.name}: {error}") from None
        size = held_count(pg, segment.name)
        sample = pg.execute(
            "select customer_id, entered_at, attributes from segops.segment_membership "
            "where segment = %s order by entered_at desc, customer_id limit %s",
            [segment.name, SAMPLE_SIZE]).fetchall()
    context.log.info(f"{segment.name}: {size} members, "
                     f"{changes[(segment.name, 'enter')]} entered, "
                     f"{changes[(segment.name, 'exit')]} exited")
    metadata = {
        "size": dg.MetadataValue.int(size),
        "enters": dg.MetadataValue.int(changes[(segment.name, "enter")]),
        "exits": dg.MetadataValue.int(changes[(segment.name, "exit")]),
        "evaluated_at": dg.MetadataValue.text(at.isoformat(sep=" ")),
        "kept_by": dg.MetadataValue.text("the stream" if realtime else "the nightly job"),
        "sample": dg.MetadataValue.md(pd.DataFrame(
            sample, columns=["customer_id", "entered_at", "attributes"]).to_markdown(index=False)),
    }
    checks = [parity_result(drift), heartbeat_result(heartbeat, wall)] if realtime else []
    return dg.MaterializeResult(metadata=metadata, check_results=checks)
