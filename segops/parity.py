"""The parity invariant: the stream's membership equals a batch evaluation at the same "now"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from segops.catalog import Segment
from segops.clock import set_session_now
from segops.customers import REEVALUATE_QUEUE

SAMPLE = 5


@dataclass(frozen=True)
class Drift:
    segment: str
    evaluated_at: datetime
    batch_size: int
    missing: list[str]  # the batch says in, the membership table says out
    unexpected: list[str]  # the membership table says in, the batch says out
    missing_count: int
    unexpected_count: int

    @property
    def total(self) -> int:
        return self.missing_count + self.unexpected_count


def measure_drift(con: duckdb.DuckDBPyConnection, segment: Segment, at: datetime) -> Drift:
    """Evaluate the segment's model over all stored events at `at` and diff it with membership."""
    set_session_now(con, at)
    # Customers the stream owes a re-evaluation (a load or a nightly segment changed them) are
    # not compared: what it holds for them predates their inputs.
    settled = f"customer_id not in (select customer_id from {REEVALUATE_QUEUE})"
    con.execute(
        f"create or replace temp table _batch_members as "
        f"select distinct cast(customer_id as varchar) as customer_id from {segment.relation} "
        f"where {settled}"
    )
    con.execute(
        "create or replace temp table _stream_members as "
        f"select customer_id from segops.segment_membership where segment = ? and {settled}",
        [segment.name],
    )
    missing_count, unexpected_count, batch_size = con.execute(
        """
        select
            (select count(*) from (select customer_id from _batch_members
                                   except select customer_id from _stream_members)),
            (select count(*) from (select customer_id from _stream_members
                                   except select customer_id from _batch_members)),
            (select count(*) from _batch_members)
        """
    ).fetchone()

    def sample(left: str, right: str) -> list[str]:
        return [
            row[0]
            for row in con.execute(
                f"select customer_id from {left} except select customer_id from {right} "
                f"order by 1 limit {SAMPLE}"
            ).fetchall()
        ]

    return Drift(
        segment=segment.name,
        evaluated_at=at,
        batch_size=batch_size,
        missing=sample("_batch_members", "_stream_members"),
        unexpected=sample("_stream_members", "_batch_members"),
        missing_count=missing_count,
        unexpected_count=unexpected_count,
    )
