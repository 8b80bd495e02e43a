"""The segments' dbt unit tests (`dbt_project/models/segments/_unit_tests.yml`): every shipped
segment's edges at a pinned "now", run by real dbt against real DuckDB."""

from __future__ import annotations

from segops.catalog import Catalog
from segops.dbt import run_dbt


def test_every_shipped_segment_has_unit_tests_and_they_pass(warehouse):
    result = run_dbt(warehouse, ["test", "--select", "test_type:unit"])
    tested = {r.node.unique_id.split(".")[2]: r.status for r in result.result.results}
    segments = set(Catalog.load(warehouse.manifest_path).segments)
    assert set(tested) == segments, f"segments without unit tests: {segments - set(tested)}"
    assert set(tested.values()) == {"pass"}
