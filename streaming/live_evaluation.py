"""A micro-batch's real-time segments evaluated against the live tables in PostgreSQL.

The batch's customers' rows are in the batch's ScopeEngine (read through its own transaction),
where the scoped segment SQL runs unchanged, with any model table it reads (a nightly segment's)
from the lake; what it finds is applied to membership in PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import psycopg
import sqlglot

from segops.clock import set_session_now
from segops.errors import SegOpsError
from segops.live_membership import apply_found
from segops.live_scope import SCOPED_TABLES, ScopeEngine
from segops.membership import SegmentContractError, SegmentFailed, stage_found
from segops.sql import DIALECT
from streaming.evaluator import RealtimeEvaluator


def evaluate_batch(pg: psycopg.Connection, evaluator: RealtimeEvaluator, engine: ScopeEngine,
                   segments: Sequence[str], customers: Sequence[str], now: datetime, *,
                   together: bool = False) -> Counter[tuple[str, str]]:
    """Evaluate `segments` at `now` for `customers`, whose rows `engine` holds (`load`), and
    apply the result; run it in the batch's transaction, under the customers' locks. Returns
    (segment, change) counts. A failing segment raises SegmentFailed (SegmentsFailed when they
    ran `together`, as for the warehouse)."""
    for name in segments:
        query = evaluator.queries[name]
        missing = engine.from_lake(relation for relation in (*query.sources.values(),
                                                             *query.tables)
                                   if relation.replace('"', "") not in SCOPED_TABLES)
        if missing:
            raise SegmentFailed(name, SegOpsError(
                f"it reads {', '.join(missing)}, which the lake does not hold yet (the "
                "nightly job builds it)"))
        for copy, relation in query.sources.items():
            engine.scope_as(copy, relation)
    set_session_now(engine.con, now)
    try:
        stage_found(engine.con, {name: evaluator.members_query(engine.con, name)
                                 for name in segments}, together=together)
    except SegmentContractError as error:
        raise SegmentFailed(error.segment, error) from error
    found = engine.con.execute("select segment, customer_id, attributes::varchar from _found"
                               ).fetchall()
    return apply_found(pg, found, segments=list(segments), customers=customers,
                       source="realtime", changed_at=now)


def sweep_query(pg: psycopg.Connection, evaluator: RealtimeEvaluator) -> str | None:
    """One PostgreSQL query for the customers whose membership time alone may have flipped
    between %(since)s and %(now)s: a row whose compared value a time boundary passed (see
    streaming/time_boundaries.py). The comparisons are DuckDB SQL, translated once; None when
    no segment depends on time."""
    columns: dict[str, frozenset[str]] = {}
    sweeps: dict[str, None] = {}
    for query in evaluator.queries.values():
        relations = sorted(set(query.sources.values()))
        for group in query.boundaries:
            for boundary in group:
                for relation in relations:
                    if relation not in columns:
                        columns[relation] = _columns(pg, relation)
                    if not boundary.columns <= columns[relation]:
                        continue
                    since, now = boundary.now_at("since"), boundary.now_at("now")
                    sweeps[f"select customer_id from {relation} where ({boundary.value_sql}) "
                           f"between least({since}, {now}) and greatest({since}, {now})"] = None
    if not sweeps:
        return None
    (translated,) = sqlglot.transpile(" union ".join(sweeps), read=DIALECT, write="postgres")
    # a literal % in the SQL must not read as a parameter
    return (translated.replace("%", "%%").replace("%%(since)s", "%(since)s")
            .replace("%%(now)s", "%(now)s"))


def crossed_customers(pg: psycopg.Connection, sweep: str | None, since: datetime,
                      now: datetime) -> set[str]:
    """The customers `sweep` (see sweep_query) finds between `since` and `now`."""
    if sweep is None:
        return set()
    return {row[0] for row in pg.execute(sweep, {"since": since, "now": now}).fetchall()}


def _columns(pg: psycopg.Connection, relation: str) -> frozenset[str]:
    schema, table = (part.strip('"') for part in relation.split("."))
    return frozenset(row[0] for row in pg.execute(
        "select column_name from information_schema.columns "
        "where table_schema = %s and table_name = %s", [schema, table]).fetchall())
