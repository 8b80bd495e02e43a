"""What arrives, at a glance: every event type seen or planned, how often it came in the last
hour and day, when it was last seen, and what the tracking plan found wrong with it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import duckdb

from segops.tracking_plan import TrackingPlan


@dataclass
class EventTypeReport:
    event_type: str
    planned: bool
    last_hour: int = 0
    last_day: int = 0
    last_seen: datetime | None = None
    violations: dict[str, int] = field(default_factory=dict)  # kind -> count, last day

    def to_dict(self) -> dict:
        return {**asdict(self), "last_seen": self.last_seen.isoformat(sep=" ")
                if self.last_seen else None}


def event_types(con: duckdb.DuckDBPyConnection, plan: TrackingPlan, now: datetime
                ) -> list[EventTypeReport]:
    """Every planned type and every type stored, planned first, then by volume."""
    reports = {name: EventTypeReport(name, planned=True) for name in plan.events}
    for event_type, last_hour, last_day, last_seen in con.execute(
        """
        select event_type,
               count(*) filter (where occurred_at > $now - interval 1 hour),
               count(*) filter (where occurred_at > $now - interval 1 day),
               max(occurred_at)
        from raw.events group by event_type
        """,
        {"now": now},
    ).fetchall():
        report = reports.setdefault(event_type, EventTypeReport(event_type, planned=False))
        report.last_hour, report.last_day, report.last_seen = last_hour, last_day, last_seen
    for event_type, kind, count in con.execute(
        """
        select event_type, kind, count(*) from raw.event_violations
        where occurred_at > $since group by event_type, kind order by kind
        """,
        {"since": now - timedelta(days=1)},
    ).fetchall():
        reports.setdefault(event_type, EventTypeReport(event_type, planned=False)) \
            .violations[kind] = count
    return sorted(reports.values(), key=lambda r: (not r.planned, -r.last_day, r.event_type))
