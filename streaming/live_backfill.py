"""A pass that evaluates real-time segments for every customer (a new or changed definition, a
segment working again after it failed, a `reevaluate_every` come due), one chunk of customers
at a time between batches, so the stream goes on meanwhile: at 1M customers a pass takes
minutes, and a consumer that stopped for it would hold up every event it had pulled.

The consumer (streaming/live_consumer.py) runs the chunks; this module keeps where a pass got
to, and finds its next customers by key, so no list of every customer is held in memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import psycopg


@dataclass
class Pass:
    """Segments being evaluated for every customer, and how far that got."""

    due: dict[str, bool]  # segment -> asked because its `reevaluate_every` came due
    started_at: datetime  # recorded as when they were evaluated for everyone
    after: str = ""  # the last customer id done: customers are taken in id order
    customers: int = 0
    changes: Counter[str] = field(default_factory=Counter)
    asked: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.asked = frozenset(self.due)

    @property
    def segments(self) -> list[str]:
        return list(self.due)

    def drop(self, segments: list[str]) -> None:
        for name in segments:
            self.due.pop(name, None)

    def done(self, customers: list[str], found: Counter[tuple[str, str]]) -> None:
        self.after = customers[-1]
        self.customers += len(customers)
        for (segment, _), count in found.items():
            self.changes[segment] += count


def next_customers(pg: psycopg.Connection, segments: list[str], after: str, limit: int
                   ) -> list[str]:
    """The first `limit` customer ids after `after`: those with a profile, events, or
    membership of `segments` (to exit), each source read along its index. A source's first
    `limit` ids hold every id of its own among the first `limit` of all."""
    return [row[0] for row in pg.execute(
        """
        select customer_id from (
            (select customer_id from raw.customers
             where customer_id > %(after)s order by customer_id limit %(limit)s)
            union
            (select distinct customer_id from raw.events
             where customer_id > %(after)s order by customer_id limit %(limit)s)
            union
            (select distinct customer_id from segops.segment_membership
             where customer_id > %(after)s and segment = any(%(segments)s)
             order by customer_id limit %(limit)s)
        ) as ids
        order by customer_id limit %(limit)s
        """, {"after": after, "limit": limit, "segments": segments}).fetchall()]
