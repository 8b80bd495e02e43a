"""One membership asset per segment: reconciles the segment's rows into the membership tables."""

from __future__ import annotations

import dagster as dg

from orchestration.resources import WarehouseResource
from segops.catalog import Segment
from segops.clock import set_session_now, utc_now
from segops.membership import SegmentContractError, apply_membership
from segops.warehouse import transaction

SAMPLE_SIZE = 5


def membership_key(segment_name: str) -> dg.AssetKey:
    return dg.AssetKey(["membership", segment_name])


def build_membership_asset(segment: Segment) -> dg.AssetsDefinition:
    @dg.asset(
        key=membership_key(segment.name),
        deps=[dg.AssetKey(["segments", segment.name])],
        group_name="membership",
        kinds={"duckdb"},
        description=f"Who is in `{segment.name}` now, with every enter and exit. "
        + segment.description,
        tags={"segops/refresh": segment.refresh or "unknown"},
        metadata={"refresh": segment.refresh or "unknown", "window": segment.window or "none"},
    )
    def membership(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        if segment.problems:
            raise dg.Failure(description="\n".join(segment.problems))
        now = utc_now()
        try:
            with warehouse.get_connection() as con:
                set_session_now(con, now)
                with transaction(con):
                    delta = apply_membership(
                        con,
                        segment=segment.name,
                        members=segment.relation,
                        scope=None,
                        source="batch",
                        changed_at=now,
                    )
                sample = con.execute(
                    """
                    select customer_id, entered_at, attributes from segops.segment_membership
                    where segment = ? order by entered_at desc, customer_id limit ?
                    """,
                    [segment.name, SAMPLE_SIZE],
                ).df()
        except SegmentContractError as error:
            raise dg.Failure(description=str(error)) from None
        context.log.info(
            f"{segment.name}: {delta.size} members, {delta.enters} entered, {delta.exits} exited"
        )
        return dg.MaterializeResult(
            metadata={
                "size": dg.MetadataValue.int(delta.size),
                "enters": dg.MetadataValue.int(delta.enters),
                "exits": dg.MetadataValue.int(delta.exits),
                "evaluated_at": dg.MetadataValue.text(now.isoformat(sep=" ")),
                "sample": dg.MetadataValue.md(sample.to_markdown(index=False)),
            }
        )

    return membership
