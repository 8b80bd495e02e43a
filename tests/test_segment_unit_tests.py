"""The segments' dbt unit tests (`dbt_project/models/segments/_unit_tests.yml`): every shipped
segment's edges at a pinned "now", run by real dbt against real DuckDB."""

from __future__ import annotations

from segops.catalog import Catalog
from tests.scratch import scratch_build


def test_every_shipped_segment_has_unit_tests_and_they_pass(tmp_path):
    built = scratch_build(tmp_path)
    result = built.dbt(["test", "--select", "test_type:unit"])
    tested = {r.node.unique_id.split(".")[2]: r.status for r in result.result.results}
    segments = set(Catalog.load(built.manifest_path).segments)
    assert set(tested) == segments, f"segments without unit tests: {segments - set(tested)}"
    assert set(tested.values()) == {"pass"}
