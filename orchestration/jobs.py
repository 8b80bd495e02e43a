"""The nightly job and its schedule."""

import dagster as dg

from orchestration.dbt_assets import segops_dbt_models

nightly_segments = dg.define_asset_job(
    name="nightly_segments",
    selection=dg.AssetSelection.assets(segops_dbt_models) | dg.AssetSelection.groups("membership"),
    description="Rebuild every dbt model and reconcile every segment into the membership tables.",
    executor_def=dg.in_process_executor,
)

nightly_schedule = dg.ScheduleDefinition(
    name="nightly_segments_schedule",
    job=nightly_segments,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
