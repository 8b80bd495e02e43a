"""The lake's upkeep as a daily job: every flush and every nightly build writes new Parquet
files and snapshots; merging, expiring and deleting keep their number bounded."""

import dagster as dg

from orchestration.resources import WarehouseResource
from segops.lake import maintain


@dg.op(description="Merge the lake's small files, expire old snapshots, delete unused files.")
def maintain_lake(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    with warehouse.get_connection() as con:
        done = maintain(con)
    context.log.info(", ".join(f"{what}: {count}" for what, count in done.items()))


@dg.job(description="Keep the lake's files and snapshots bounded.",
        executor_def=dg.in_process_executor)
def lake_maintenance():
    maintain_lake()


lake_maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_schedule",
    job=lake_maintenance,
    cron_schedule="30 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
