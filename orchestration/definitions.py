"""The SegOps code location: everything `dagster dev -w workspace.yaml` loads."""

import dagster as dg

from orchestration.dbt_assets import segops_dbt_models
from orchestration.jobs import nightly_schedule, nightly_segments
from orchestration.membership_assets import build_membership_asset
from orchestration.raw_assets import raw_customers, raw_events
from orchestration.resources import build_resources, settings
from segops.catalog import Catalog

catalog = Catalog.load(settings.manifest_path)

defs = dg.Definitions(
    assets=[
        raw_customers,
        raw_events,
        segops_dbt_models,
        *(build_membership_asset(segment) for segment in catalog.segments.values()),
    ],
    jobs=[nightly_segments],
    schedules=[nightly_schedule],
    resources=build_resources(),
)
