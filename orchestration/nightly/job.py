"""The nightly job and its schedule."""

import dagster as dg

from orchestration.customers import raw_customers
from orchestration.nightly.raw import raw_events


def build_nightly_job(dbt_models: dg.AssetsDefinition):
    """The raw events copied from PostgreSQL first, then dbt, then membership.

    dbt builds the segments and what they read, with their tests, not every model: a mart no
    segment reads (`customer_profiles`) is the analysts', built when they ask for it, and a
    segment that starts reading it brings it into the nightly by itself."""
    segments_and_upstream = (dg.AssetSelection.groups("segments").upstream()
                             & dg.AssetSelection.assets(dbt_models))
    return dg.define_asset_job(
        name="nightly_segments",
        # dbt's tests of the raw sources run in the same `dbt build`: select their checks too
        selection=segments_and_upstream | dg.AssetSelection.assets(raw_events)
        | dg.AssetSelection.checks_for_assets(raw_customers.key, raw_events.key)
        | dg.AssetSelection.groups("membership"),
        description="Rebuild the segments and the models they read, then reconcile every "
                    "segment into membership.",
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


def build_events_flush_schedule() -> dg.ScheduleDefinition:
    """Every five minutes, the events the stream stored in PostgreSQL flushed into the lake in
    one commit: preview reads the lake plus the events since, so the tail it reads from
    PostgreSQL stays minutes long, and the lake gets a few large files instead of one per batch."""
    return dg.ScheduleDefinition(
        name="flush_events_schedule",
        job=dg.define_asset_job(
            name="flush_events", selection=dg.AssetSelection.assets(raw_events).without_checks(),
            executor_def=dg.in_process_executor,
            config={"ops": {raw_events.op.name: {"config": {"profiles": False}}}}),
        cron_schedule="*/5 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
