"""The SegOps Dagster code location."""
