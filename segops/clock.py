"""One notion of "now" for every path, so batch, stream, tests and point-in-time runs agree."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import duckdb


def pinned_now() -> datetime | None:
    """The time SEGOPS_NOW pins every path to (reproducible runs and tests), if set."""
    fixed = os.environ.get("SEGOPS_NOW")
    return parse_timestamp(fixed) if fixed else None


def utc_now() -> datetime:
    """Naive UTC now (the warehouse stores naive UTC), unless SEGOPS_NOW pins it."""
    return pinned_now() or datetime.now(UTC).replace(tzinfo=None)


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO 8601 / RFC 3339 timestamp into naive UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def set_session_now(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Make `segops_now()` in views evaluated on this connection return `now`."""
    con.execute(f"set variable segops_now = timestamp '{now.isoformat(sep=' ')}'")
