"""The raw tables, written outside Dagster (generator, stream, replay), shown as external assets."""

import dagster as dg

raw_customers = dg.AssetSpec(
    key=["raw", "customers"],
    group_name="raw",
    kinds={"duckdb"},
    description="Customer profiles as loaded (sign-up time, country, channel).",
)

raw_events = dg.AssetSpec(
    key=["raw", "events"],
    group_name="raw",
    kinds={"duckdb", "pubsub"},
    description="Every shop event, deduplicated on event_id, appended by the streaming consumer.",
)
