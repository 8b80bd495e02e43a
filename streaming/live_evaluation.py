"""A micro-batch's real-time segments evaluated against the live tables in PostgreSQL.

The batch's customers' rows are read through the batch's own PostgreSQL transaction (so they
include the events it just stored, under its customer locks) into an in-memory DuckDB, where
the scoped segment SQL runs unchanged; what it finds is applied to membership in PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import duckdb
import psycopg
import sqlglot

from segops.clock import set_session_now
from segops.errors import SegOpsError
from segops.membership import stage_found
from segops.sql import DIALECT, literal
from streaming.evaluator import EVENTS_RELATION, RealtimeEvaluator
from streaming.live_batch import apply_found, copy_histories


def evaluate_batch(pg: psycopg.Connection, evaluator: RealtimeEvaluator,
                   customers: Sequence[str], now: datetime) -> Counter[tuple[str, str]]:
    """Evaluate every real-time segment for `customers` at `now` and apply the result; run it
    in the batch's transaction, under the customers' locks. Returns (segment, change) counts."""
    names = list(evaluator.queries)
    engine = duckdb.connect()
    scope = ", ".join(literal(customer) for customer in sorted(set(customers)))
    engine.execute("create temp table _scope (customer_id varchar)")
    if scope:
        engine.execute(f"insert into _scope select unnest([{scope}])")
    for copy, relation in evaluator.sources().items():
        if relation != EVENTS_RELATION:
            raise SegOpsError(f"{relation} is not read from PostgreSQL yet")
        copy_histories(pg, engine, copy, "_scope")
    set_session_now(engine, now)
    stage_found(engine, {name: evaluator.members_query(engine, name) for name in names})
    found = engine.execute("select segment, customer_id, attributes::varchar from _found"
                           ).fetchall()
    return apply_found(pg, found, segments=names, customers=customers, source="realtime",
                       changed_at=now)


def crossed_customers(pg: psycopg.Connection, evaluator: RealtimeEvaluator, since: datetime,
                      now: datetime) -> set[str]:
    """The customers whose membership time alone may have flipped between `since` and `now`:
    a row whose compared value a time boundary passed (see streaming/time_boundaries.py),
    found by PostgreSQL on the live tables (the comparisons, DuckDB SQL, are translated)."""
    found: set[str] = set()
    for query in evaluator.queries.values():
        relations = sorted(set(query.sources.values()))
        for group in query.boundaries:
            for boundary in group:
                for relation in relations:
                    if not boundary.columns <= _columns(pg, relation):
                        continue
                    low, high = boundary.now_at_time(since), boundary.now_at_time(now)
                    sweep = (f"select customer_id from {relation} where ({boundary.value_sql}) "
                             f"between least({low}, {high}) and greatest({low}, {high})")
                    (translated,) = sqlglot.transpile(sweep, read=DIALECT, write="postgres")
                    found.update(row[0] for row in pg.execute(translated).fetchall())
    return found


def _columns(pg: psycopg.Connection, relation: str) -> frozenset[str]:
    schema, table = (part.strip('"') for part in relation.split("."))
    return frozenset(row[0] for row in pg.execute(
        "select column_name from information_schema.columns "
        "where table_schema = %s and table_name = %s", [schema, table]).fetchall())
