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

from segops.clock import set_session_now
from segops.errors import SegOpsError
from segops.membership import stage_found
from segops.sql import literal
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
