"""Incremental evaluation of the real-time segments, from their compiled SQL in the manifest.

Per micro-batch it evaluates each real-time segment only for the customers in scope: those the
batch touched, plus those whose membership can change with time alone since the last
evaluation: a value the segment compares with `segops_now()` was passed by its boundary (a
cart turning 30 minutes old, an account a day old; see `streaming/time_boundaries.py`). The
result goes through the one membership writer with source `realtime`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from segops.catalog import Catalog, local_relation
from segops.clock import set_session_now
from segops.errors import SegOpsError
from segops.membership import (
    MembershipDelta,
    SegmentContractError,
    SegmentFailed,
    apply_membership,
    members_query,
    stage_found,
)
from streaming.customer_events import EVENTS, CustomerEvents
from streaming.scoping import ScopedQuery, scoped_query

log = logging.getLogger(__name__)

EVENTS_RELATION = local_relation(EVENTS)  # as the manifest names it


@dataclass
class RealtimeEvaluator:
    queries: dict[str, ScopedQuery]
    refused: dict[str, str] = field(default_factory=dict)
    _shaped: dict[str, str] = field(default_factory=dict)
    _sweeps: dict[str, list[str]] = field(default_factory=dict)
    _columns: dict[str, frozenset[str]] = field(default_factory=dict)

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

    def evaluate(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        touched: Iterable[str],
        now: datetime,
        since: datetime | None,
        segments: Iterable[str] | None = None,
        everyone: bool = False,
        together: bool = False,
        by_customer: CustomerEvents | None = None,
    ) -> list[MembershipDelta]:
        """Re-evaluate `segments` (default: all) at `now` for the customers in scope.

        Scope is `touched` plus the customers whose value a time boundary passed in
        [since, now]; `everyone` evaluates all customers. Runs inside the caller's
        transaction; a failing segment raises SegmentFailed naming it, or SegmentsFailed if
        they ran `together` (in one statement): then evaluate them separately to learn which.
        The scope's events are read from `by_customer` when given (B-tree seeks, not a scan).
        """
        names = list(self.queries if segments is None else segments)
        self._stage_scope(con, names, list(touched), now, since, everyone, by_customer)
        set_session_now(con, now)
        try:
            stage_found(con, {name: self.members_query(con, name) for name in names},
                        together=together)
            return apply_membership(con, segments=names, scope="_scope", source="realtime",
                                    changed_at=now, sizes=everyone)
        except SegmentContractError as error:
            raise SegmentFailed(error.segment, error) from error

    def members_query(self, con: duckdb.DuckDBPyConnection, name: str) -> str:
        """The segment's scoped SQL shaped for the membership writer (built once)."""
        if name not in self._shaped:
            try:
                self._shaped[name] = members_query(con, name, f"({self.queries[name].sql})")
            except duckdb.Error as error:
                raise SegmentFailed(name, error) from error
        return self._shaped[name]

    def _stage_scope(
        self,
        con: duckdb.DuckDBPyConnection,
        names: list[str],
        touched: list[str],
        now: datetime,
        since: datetime | None,
        everyone: bool,
        by_customer: CustomerEvents | None,
    ) -> None:
        touched_sql = "select unnest($touched::varchar[]) as customer_id"
        crossed = [] if everyone or since is None else self._crossed(con, names)
        if everyone:
            scope_sql = " union ".join(
                f"select customer_id from {relation}"
                for relation in [*set(self.sources().values()), "segops.segment_membership"]
            )
            params = {}
        elif crossed:
            scope_sql = " union ".join([touched_sql, *crossed])
            params = {"touched": touched, "since": since, "now": now}
        else:
            scope_sql, params = touched_sql, {"touched": touched}
        con.execute(f"create or replace temp table _scope as {scope_sql}", params)
        for copy, relation in self.sources().items():
            if relation == EVENTS_RELATION and by_customer is not None and not everyone:
                by_customer.copy_into(con, copy, "_scope")
                continue
            con.execute(
                f"create or replace temp table {copy} as select * from {relation} "
                "where customer_id in (select customer_id from _scope)"
            )

    def _crossed(self, con: duckdb.DuckDBPyConnection, names: list[str]) -> list[str]:
        """Queries for the customers whose membership time alone may have flipped in
        [since, now]: a row whose compared value lies between f(since) and f(now)."""
        for name in names:
            if name not in self._sweeps:
                self._sweeps[name] = self._sweeps_of(con, name)
        return list(dict.fromkeys(q for name in names for q in self._sweeps[name]))

    def _sweeps_of(self, con: duckdb.DuckDBPyConnection, name: str) -> list[str]:
        """Each boundary of `name` bound to the sources that hold its value's columns."""
        query = self.queries[name]
        relations = sorted({*query.sources.values(), *query.tables})
        sweeps = []
        for group in query.boundaries:
            bound = [(boundary, relation) for boundary in group for relation in relations
                     if boundary.columns <= self._columns_of(con, relation)]
            if not bound:
                raise SegmentFailed(name, SegOpsError(
                    f"it compares segops_now() with {group[0].value_sql}, which none of the "
                    f"sources it reads ({', '.join(relations)}) holds"))
            for boundary, relation in bound:
                since, now = boundary.now_at("since"), boundary.now_at("now")
                sweeps.append(
                    f"select customer_id from {relation} where ({boundary.value_sql}) "
                    f"between least({since}, {now}) and greatest({since}, {now})"
                )
        return sweeps

    def _columns_of(self, con: duckdb.DuckDBPyConnection, relation: str) -> frozenset[str]:
        if relation not in self._columns:
            self._columns[relation] = frozenset(
                row[0].lower() for row in con.execute(f"describe {relation}").fetchall())
        return self._columns[relation]

    def sources(self) -> dict[str, str]:
        return {copy: rel for q in self.queries.values() for copy, rel in q.sources.items()}
