"""The real-time segments' scoped queries, from their compiled SQL in the manifest: what
streaming/live_evaluation.py runs per micro-batch for the customers in scope (those the batch
touched, and those a time boundary just passed; see `streaming/time_boundaries.py`), each
shaped once for the membership writer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import duckdb

from segops.catalog import Catalog
from segops.membership import SegmentContractError, SegmentFailed, members_query
from streaming.scoping import ScopedQuery, scoped_query

log = logging.getLogger(__name__)


@dataclass
class RealtimeEvaluator:
    queries: dict[str, ScopedQuery]
    refused: dict[str, str] = field(default_factory=dict)
    _shaped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> RealtimeEvaluator:
        queries, refused = {}, {}
        for segment in catalog.segments.values():
            if segment.refresh != "realtime":
                continue
            if segment.problems:
                refused[segment.name] = "; ".join(segment.problems)
                continue
            try:
                queries[segment.name] = scoped_query(catalog, segment)
            except SegmentContractError as error:
                refused[segment.name] = str(error)
        for name, reason in refused.items():
            log.error("real-time segment %s is not evaluated: %s", name, reason)
        return cls(queries=queries, refused=refused)

    def members_query(self, con: duckdb.DuckDBPyConnection, name: str) -> str:
        """The segment's scoped SQL shaped for the membership writer (built once)."""
        if name not in self._shaped:
            try:
                self._shaped[name] = members_query(con, name, f"({self.queries[name].sql})")
            except duckdb.Error as error:
                raise SegmentFailed(name, error) from error
        return self._shaped[name]

    def sources(self) -> dict[str, str]:
        return {copy: rel for q in self.queries.values() for copy, rel in q.sources.items()}
