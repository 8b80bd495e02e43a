"""What arrives, at a glance: every event type seen or planned, how often it came in the last
hour and day, when it was last seen, and what the tracking plan found wrong with it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime

import duckdb

from segops.sql import literal
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
    """Every planned type and every type stored in the last day, planned first, then by
    volume. Only the last day is read (PostgreSQL's index on the time), so the nightly's check
    and the sensor cost the same at any history; `last_seen` is filled by `with_last_seen`."""
    reports = {name: EventTypeReport(name, planned=True) for name in plan.events}
    for event_type, last_hour, last_day in _in_postgres(con, last_day_counts(now)):
        report = reports.setdefault(event_type, EventTypeReport(event_type, planned=False))
        report.last_hour, report.last_day = last_hour, last_day
    for event_type, kind, count in _in_postgres(
            con, "select event_type, kind, count(*) from raw.event_violations where "
                 f"{_within(now, '1 day')} group by event_type, kind order by kind"):
        reports.setdefault(event_type, EventTypeReport(event_type, planned=False)) \
            .violations[kind] = count
    return _in_order(reports.values())


def last_day_counts(now: datetime) -> str:
    """PostgreSQL's count of the events per type in the hour and the day before `now`, read
    from the index on the time alone (it carries the type), never the table, where the day's
    events may lie anywhere among hundreds of millions."""
    return (f"select event_type, count(*) filter (where {_within(now, '1 hour')}) as last_hour, "
            f"count(*) as last_day from raw.events where {_within(now, '1 day')} "
            "group by event_type")


def _in_postgres(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    """`sql` run by PostgreSQL itself: DuckDB's scanner would copy every row out to filter it."""
    return con.execute(f"select * from postgres_query('live', {literal(sql)})").fetchall()


def _within(now: datetime, span: str) -> str:
    """PostgreSQL's condition for a row of the `span` before `now`."""
    return f"occurred_at > timestamp {literal(now.isoformat(sep=' '))} - interval '{span}'"


def with_last_seen(con: duckdb.DuckDBPyConnection, reports: list[EventTypeReport]
                   ) -> list[EventTypeReport]:
    """`reports` with when each type was last seen, and the types not seen in the last day, over
    all the events stored (a whole scan: for `segops events`, not for the schedule)."""
    known = {report.event_type: report for report in reports}
    for event_type, last_seen in con.execute("select event_type, max(occurred_at) "
                                             "from raw.events group by event_type").fetchall():
        known.setdefault(event_type, EventTypeReport(event_type, planned=False)
                         ).last_seen = last_seen
    return _in_order(known.values())


def _in_order(reports: Iterable[EventTypeReport]) -> list[EventTypeReport]:
    """Planned first, then by volume."""
    return sorted(reports, key=lambda r: (not r.planned, -r.last_day, r.event_type))
