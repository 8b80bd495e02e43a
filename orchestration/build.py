"""Assemble the SegOps code location from settings (tests build their own)."""

import dagster as dg

from orchestration.customers import raw_customers
from orchestration.events import event_types_sensor, tracking_plan_check
from orchestration.lake_maintenance import lake_maintenance, lake_maintenance_schedule
from orchestration.nightly.dbt_models import build_dbt_assets
from orchestration.nightly.job import (
    build_events_flush_schedule,
    build_nightly_job,
    build_nightly_schedule,
)
from orchestration.nightly.membership import build_membership_asset
from orchestration.nightly.raw import raw_events
from orchestration.preview import build_preview_job
from orchestration.realtime import build_realtime_sensor
from orchestration.resources import build_dbt_project, build_resources
from segops.catalog import Catalog
from segops.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    project = build_dbt_project(settings)
    catalog = Catalog.load(settings.manifest_path)
    dbt_models = build_dbt_assets(project)
    nightly = build_nightly_job(dbt_models)
    return dg.Definitions(
        assets=[
            raw_customers,
            raw_events,
            dbt_models,
            *(build_membership_asset(segment, catalog) for segment in catalog.segments.values()),
        ],
        asset_checks=[tracking_plan_check],
        jobs=[nightly, build_preview_job(settings), lake_maintenance],
        schedules=[build_nightly_schedule(nightly), build_events_flush_schedule(),
                   lake_maintenance_schedule],
        sensors=[build_realtime_sensor(catalog.realtime_segments()), event_types_sensor],
        resources=build_resources(settings, project),
    )
