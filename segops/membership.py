"""The one writer of segment membership, used by the nightly batch and the stream alike.

`segment_membership` holds who is in each segment now; `segment_membership_changes` is the
append-only history of enters and exits. It answers "who was in X at time T" and is the outbox
of the change feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb

from segops.errors import SegOpsError
from segops.sql import literal, quote

if TYPE_CHECKING:  # pandas is loaded by DuckDB when a frame is asked for
    import pandas as pd


class SegmentContractError(SegOpsError):
    """A segment's rows break the contract (one row per member, with a customer_id)."""

    def __init__(self, message: str, segment: str | None = None):
        super().__init__(message)
        self.segment = segment


class SegmentFailed(SegOpsError):
    """A segment's SQL failed at run time."""

    def __init__(self, segment: str, error: Exception):
        super().__init__(f"segment {segment!r} failed: {error}")
        self.segment = segment
        self.error = error


class SegmentsFailed(SegOpsError):
    """One of several segments evaluated in one statement failed; which one is not known."""


@dataclass(frozen=True)
class MembershipDelta:
    segment: str
    enters: int
    exits: int
    size: int | None = None  # members after the change, when counted (see apply_membership)


def members_query(con: duckdb.DuckDBPyConnection, segment: str, members: str) -> str:
    """SQL giving (segment, customer_id, attributes json) for the rows of `members`.

    `members` is a table, a view or a parenthesised query with one row per member: a
    `customer_id` plus attribute columns. Fails if there is no customer_id column.
    """
    columns = [row[0] for row in con.execute(f"describe {members}").fetchall()]
    if "customer_id" not in columns:
        raise SegmentContractError(
            f"segment {segment!r} has no customer_id column (columns: {', '.join(columns)})",
            segment,
        )
    attributes = [c for c in columns if c != "customer_id"]
    attributes_json = (
        "to_json(struct_pack(" + ", ".join(f"{quote(c)} := {quote(c)}" for c in attributes) + "))"
        if attributes
        else "null::json"
    )
    return (
        f"select {literal(segment)} as segment, cast(customer_id as varchar) as customer_id, "
        f"{attributes_json} as attributes from {members}"
    )


def stage_found(
    con: duckdb.DuckDBPyConnection, queries: dict[str, str], *, together: bool = False
) -> None:
    """Evaluate each segment's members_query into `_found`, the input of either membership
    writer; rows that break the segment contract raise SegmentContractError naming the segment.

    `together` runs them as one statement, which is a third of the time for a micro-batch;
    if it fails, SegmentsFailed says to evaluate them one by one to learn which failed.
    """
    con.execute(
        "create or replace temp table _found "
        "(segment varchar, customer_id varchar, attributes json)"
    )
    if together and len(queries) > 1:
        try:
            con.execute("insert into _found " + " union all ".join(
                f"({query})" for query in queries.values()))
        except duckdb.Error as error:
            reason = str(error).splitlines()[0]
            raise SegmentsFailed(f"one of {', '.join(queries)} failed: {reason}") from error
    else:
        for segment, query in queries.items():
            try:
                con.execute(f"insert into _found {query}")
            except duckdb.Error as error:
                raise SegmentFailed(segment, error) from error
    _check_contract(con)


def _check_contract(con: duckdb.DuckDBPyConnection) -> None:
    """One row per member with a customer_id, or nothing is written."""
    # Finding nothing wrong is the common case and runs on every micro-batch: the plainest
    # query that can tell (half the time of counting what is wrong); the counts only if needed.
    broken = con.execute(
        "select segment from _found group by segment, customer_id "
        "having count(*) > 1 or customer_id is null order by segment limit 1"
    ).fetchone()
    if broken is None:
        return
    (segment,) = broken
    nulls, duplicates = con.execute(
        """
        select count(*) filter (where customer_id is null),
               count(customer_id) - count(distinct customer_id)
        from _found where segment = ?
        """,
        [segment],
    ).fetchone()
    if nulls:
        raise SegmentContractError(
            f"segment {segment!r} has {nulls} rows with a null customer_id", segment
        )
    sample = [row[0] for row in con.execute(
        """
        select customer_id from _found where segment = ?
        group by customer_id having count(*) > 1 order by customer_id limit 3
        """,
        [segment],
    ).fetchall()]
    raise SegmentContractError(
        f"segment {segment!r} has {duplicates} duplicate customer_id rows "
        f"(one row per member expected), e.g. {', '.join(sample)}",
        segment,
    )


def current_members(con: duckdb.DuckDBPyConnection, segment: str) -> pd.DataFrame:
    """Who is in `segment` now, with when they entered and their attributes."""
    return con.execute(
        """
        select customer_id, entered_at, source, attributes
        from segops.segment_membership where segment = ? order by customer_id
        """,
        [segment],
    ).df()


def members_at(con: duckdb.DuckDBPyConnection, segment: str, at: datetime) -> pd.DataFrame:
    """Who was in `segment` at time `at`, replayed from the change history."""
    return con.execute(
        """
        with latest as (
            select customer_id, change, changed_at, attributes
            from segops.segment_membership_changes
            where segment = $segment and changed_at <= $at
            qualify row_number() over (
                partition by customer_id order by changed_at desc, change_id desc) = 1
        )
        select customer_id, changed_at as entered_at, attributes
        from latest where change = 'enter' order by customer_id
        """,
        {"segment": segment, "at": at},
    ).df()


def customer_history(con: duckdb.DuckDBPyConnection, customer_id: str) -> pd.DataFrame:
    """Every enter and exit of one customer, oldest first."""
    return con.execute(
        """
        select changed_at, segment, change, source, attributes
        from segops.segment_membership_changes
        where customer_id = ? order by changed_at, change_id
        """,
        [customer_id],
    ).df()
