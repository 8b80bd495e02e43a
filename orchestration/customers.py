"""`raw/customers` as an asset: materializing it loads a customers file (CSV or Parquet), as
`segops load-customers` does. The stream's identify events update the same table between
loads; the stream re-evaluates the real-time segments of the customers a load changed."""

from pathlib import Path

import dagster as dg

from orchestration.resources import WarehouseResource
from segops.clock import utc_now
from segops.customer_files import load_customers_into_postgres
from segops.errors import SegOpsError


class CustomerFileConfig(dg.Config):
    """The file to load: a CSV with a header or a Parquet file, one row per customer."""

    path: str


@dg.asset(
    key=["raw", "customers"],
    group_name="raw",
    kinds={"postgres"},
    description="Customer profiles: loaded from files by materializing this asset, and updated "
    "by the stream's identify events; every change is kept in raw.customer_traits.",
)
def raw_customers(context: dg.AssetExecutionContext, config: CustomerFileConfig,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:
    try:
        report = load_customers_into_postgres(warehouse.postgres_dsn, Path(config.path),
                                              utc_now())
    except SegOpsError as error:
        raise dg.Failure(description=str(error)) from None
    for where, why in report.rejected:
        context.log.warning(f"{config.path}, {where}: {why}")
    return dg.MaterializeResult(metadata={
        "rows": report.rows,
        "applied": report.applied,
        "changed": len(report.changed),
        "rejected": len(report.rejected),
        "rejected_rows": dg.MetadataValue.md("\n".join(
            f"- {where}: {why}" for where, why in report.rejected[:100]) or "none"),
    })
