"""The raw events, written outside Dagster (generator, stream, replay), as an external asset."""

import dagster as dg

raw_events = dg.AssetSpec(
    key=["raw", "events"],
    group_name="raw",
    kinds={"duckdb", "pubsub"},
    description="Every shop event, deduplicated on event_id, appended by the streaming consumer.",
)
