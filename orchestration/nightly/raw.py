"""The raw events as an asset. They are written outside Dagster (generator, stream, replay): in
the warehouse file they are an external asset; when the stream keeps them in PostgreSQL,
materializing the asset copies what it stored since the last copy into the lake, where the
nightly dbt build reads it."""

import dagster as dg

from orchestration.resources import WarehouseResource
from segops.live_import import import_live_raw
from segops.settings import Settings

raw_events = dg.AssetSpec(
    key=["raw", "events"],
    group_name="raw",
    kinds={"duckdb", "pubsub"},
    description="Every shop event, deduplicated on event_id, appended by the streaming consumer.",
)


class RawCopyConfig(dg.Config):
    # The frequent flush copies events only: profiles change in place and are copied whole,
    # which is the nightly's to do.
    profiles: bool = True


def build_raw_events(settings: Settings) -> dg.AssetSpec | dg.AssetsDefinition:
    """The external asset, or with SEGOPS_POSTGRES_DSN the copy from PostgreSQL."""
    if not settings.postgres_dsn:
        return raw_events

    @dg.asset(
        key=raw_events.key,
        group_name="raw",
        kinds={"ducklake", "postgres"},
        description="Every shop event the stream stored in PostgreSQL, with the customers' "
        "profiles and trait history, copied into the lake for the nightly dbt build.",
    )
    def raw_events_from_postgres(config: RawCopyConfig,
                                 warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.get_connection() as con:
            imported = import_live_raw(con, warehouse.postgres_dsn, profiles=config.profiles)
        return dg.MaterializeResult(metadata={
            "events_added": imported.events, "customers": imported.customers,
            "trait_changes": imported.traits})

    return raw_events_from_postgres
