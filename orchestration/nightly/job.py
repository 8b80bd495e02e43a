"""The nightly job and its schedule."""

import dagster as dg

from orchestration.customers import raw_customers
from orchestration.nightly.raw import raw_events


def build_nightly_job(dbt_models: dg.AssetsDefinition, raw: dg.AssetSpec | dg.AssetsDefinition):
    """`raw` is the raw events: materialized first when it copies them from PostgreSQL."""
    copied = [raw] if isinstance(raw, dg.AssetsDefinition) else []
    return dg.define_asset_job(
        name="nightly_segments",
        # dbt's tests of the raw sources run in the same `dbt build`: select their checks too
        selection=dg.AssetSelection.assets(dbt_models, *copied)
        | dg.AssetSelection.checks_for_assets(raw_customers.key, raw_events.key)
        | dg.AssetSelection.groups("membership"),
        description="Rebuild every dbt model, then reconcile every segment into membership.",
        executor_def=dg.in_process_executor,
    )


def build_nightly_schedule(job) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="nightly_segments_schedule",
        job=job,
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


def build_raw_copy_schedule(raw: dg.AssetsDefinition) -> dg.ScheduleDefinition:
    """Every five minutes, the events the stream stored in PostgreSQL copied into the warehouse,
    so preview and diff, which read the warehouse, see a reach minutes old, not a night old."""
    return dg.ScheduleDefinition(
        name="copy_live_raw_schedule",
        job=dg.define_asset_job(name="copy_live_raw", selection=dg.AssetSelection.assets(raw),
                                executor_def=dg.in_process_executor),
        cron_schedule="*/5 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
