"""The raw events as an asset. The stream, the generator and replay write them to PostgreSQL,
outside Dagster; materializing the asset copies what was stored since the last copy into the
lake, where the nightly dbt build reads it."""

import dagster as dg

from orchestration.resources import WarehouseResource
from segops.live_import import import_live_raw


class RawCopyConfig(dg.Config):
    # The frequent flush copies events only: preview reads the profiles from PostgreSQL, and
    # the nightly copies those written since its last copy.
    profiles: bool = True


@dg.asset(
    key=["raw", "events"],
    group_name="raw",
    kinds={"ducklake", "postgres"},
    description="Every shop event the stream stored in PostgreSQL, with the customers' "
    "profiles and trait history, copied into the lake for the nightly dbt build.",
)
def raw_events(config: RawCopyConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        imported = import_live_raw(con, warehouse.postgres_dsn, profiles=config.profiles)
    return dg.MaterializeResult(metadata={
        "events_added": imported.events, "customers": imported.customers,
        "trait_changes": imported.traits})
