"""Loading customers from a file (CSV with a header, or Parquet): every row checked, the good
ones applied in one transaction (in PostgreSQL, one per few thousand customers), each bad one
reported with its line and reason.

Columns: `customer_id` (required), the typed traits (`email`, `country`, `city`,
`acquisition_channel`, `signed_up_at`), and any other column as an extra trait. An empty cell
sets nothing. A time without a zone is UTC. The customers whose profile changed are queued for
the stream, which re-evaluates their real-time segments with its next batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from segops.clock import parse_timestamp
from segops.customers import TraitChange
from segops.errors import SegOpsError
from segops.events import MAX_ID_LENGTH
from segops.live_membership import lock_customers, queue_for_reevaluation
from segops.live_scope import ScopeEngine

FORMATS = {".csv": "read_csv", ".parquet": "read_parquet"}


@dataclass
class LoadReport:
    rows: int = 0
    applied: int = 0
    changed: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (where, why)


def load_customers_into_postgres(dsn: str, path: Path, loaded_at: datetime,
                                 chunk: int = 5000) -> LoadReport:
    """`load_customers` for live tables in PostgreSQL: the same rules run in a DuckDB holding
    the customers' current rows, `chunk` customers per transaction under their locks (the
    stream may be changing the same customers), the changed ones queued for the stream."""
    engine = ScopeEngine()
    changes, report = read_changes(engine.con, path, loaded_at)
    with psycopg.connect(dsn) as pg:
        for start in range(0, len(changes), chunk):
            part = changes[start:start + chunk]
            customers = [change.customer_id for change in part]
            with pg.transaction():
                lock_customers(pg, customers)
                engine.load(pg, customers, tables=("raw.customers", "raw.customer_traits"))
                changed = engine.apply_traits(pg, part)
                queue_for_reevaluation(pg, changed, f"load:{path.name}")
            report.changed += changed
    return report


def read_changes(con: duckdb.DuckDBPyConnection, path: Path, loaded_at: datetime
                 ) -> tuple[list[TraitChange], LoadReport]:
    """The file's good rows as trait changes, and the report of its bad ones."""
    report = LoadReport()
    changes, seen = [], {}
    for where, row in _rows(con, path):
        report.rows += 1
        change = _change(row, loaded_at, f"load:{path.name}")
        if isinstance(change, str):
            report.rejected.append((where, change))
        elif change.customer_id in seen:
            earlier = seen[change.customer_id]
            report.rejected.append((where, f"customer_id {change.customer_id!r} is already on "
                                           f"{earlier}"))
        else:
            seen[change.customer_id] = where
            changes.append(change)
    report.applied = len(changes)
    return changes, report


def _rows(con: duckdb.DuckDBPyConnection, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for each row: `line N` of a CSV (its header is line 1), `row N` of Parquet."""
    reader = FORMATS.get(path.suffix.lower())
    if reader is None:
        raise SegOpsError(f"{path}: a customers file is .csv or .parquet")
    if not path.is_file():
        raise SegOpsError(f"no such file: {path}")
    options = ", header = true, all_varchar = true" if reader == "read_csv" else ""
    try:
        relation = con.sql(f"select * from {reader}($path{options})", params={"path": str(path)})
        names, rows = relation.columns, relation.fetchall()
    except duckdb.Error as error:
        raise SegOpsError(f"{path} cannot be read: {str(error).splitlines()[0]}") from None
    if "customer_id" not in names:
        raise SegOpsError(f"{path} has no customer_id column (columns: {', '.join(names)})")
    first, unit = (2, "line") if reader == "read_csv" else (1, "row")
    return [(f"{unit} {number}", dict(zip(names, row, strict=True)))
            for number, row in enumerate(rows, start=first)]


def _change(row: dict[str, Any], loaded_at: datetime, source: str) -> TraitChange | str:
    """The trait change a row makes, or why it cannot be applied."""
    customer_id = row.pop("customer_id")
    if not isinstance(customer_id, str) or not customer_id.strip():
        return "customer_id is missing"
    if len(customer_id) > MAX_ID_LENGTH:
        return f"customer_id is longer than {MAX_ID_LENGTH} characters"
    traits = {}
    for name, value in row.items():
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            continue
        if name == "signed_up_at":
            moment = _moment(value)
            if moment is None:
                return f"signed_up_at {str(value)[:40]!r} is not a time"
            value = moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        elif isinstance(value, datetime | date):
            value = value.isoformat()
        traits[name] = value
    return TraitChange(customer_id, traits, loaded_at, source)


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    try:
        return parse_timestamp(str(value))
    except (ValueError, OverflowError):
        return None
