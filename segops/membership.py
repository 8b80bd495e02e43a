"""The one writer of segment membership, used by the nightly batch and the stream alike.

`segment_membership` holds who is in each segment now; `segment_membership_changes` is the
append-only history of enters and exits. It answers "who was in X at time T" and is the outbox
of the change feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from segops.errors import SegOpsError
from segops.warehouse import quote

SOURCES = ("batch", "realtime")


class SegmentContractError(SegOpsError):
    """A segment's rows break the contract (one row per member, with a customer_id)."""


@dataclass(frozen=True)
class MembershipDelta:
    segment: str
    size: int
    enters: int
    exits: int


def apply_membership(
    con: duckdb.DuckDBPyConnection,
    *,
    segment: str,
    members: str,
    scope: str | None,
    source: str,
    changed_at: datetime,
) -> MembershipDelta:
    """Record who entered and who left `segment` among the customers evaluated.

    `members` names a table or view with one row per member: `customer_id` plus attribute
    columns. `scope` names a table whose `customer_id` column lists the customers that were
    evaluated (None: all customers), so a member missing from `members` exits only if it was in
    scope. Run it inside the caller's transaction.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    _stage_found(con, segment, members, scope)
    in_scope = "" if scope is None else f"and customer_id in (select customer_id from {scope})"
    segment_only = {"segment": segment}
    stamped = {"segment": segment, "source": source, "at": changed_at}
    statements = [
        (
            f"""
            create or replace temp table _exits as
            select customer_id, attributes from segops.segment_membership
            where segment = $segment {in_scope}
              and customer_id not in (select customer_id from _found)
            """,
            segment_only,
        ),
        (
            """
            create or replace temp table _enters as
            select customer_id, attributes from _found
            where customer_id not in (
                select customer_id from segops.segment_membership where segment = $segment
            )
            """,
            segment_only,
        ),
        (
            """
            insert into segops.segment_membership_changes
                (segment, customer_id, change, changed_at, source, attributes)
            select $segment, customer_id, 'exit', $at, $source, attributes from _exits
            union all
            select $segment, customer_id, 'enter', $at, $source, attributes from _enters
            order by customer_id
            """,
            stamped,
        ),
        (
            """
            delete from segops.segment_membership
            where segment = $segment and customer_id in (select customer_id from _exits)
            """,
            segment_only,
        ),
        (
            """
            update segops.segment_membership as m set attributes = f.attributes
            from _found as f
            where m.segment = $segment and m.customer_id = f.customer_id
              and m.attributes is distinct from f.attributes
            """,
            segment_only,
        ),
        (
            """
            insert into segops.segment_membership
                (segment, customer_id, entered_at, source, attributes)
            select $segment, customer_id, $at, $source, attributes from _enters
            """,
            stamped,
        ),
    ]
    for sql, params in statements:
        con.execute(sql, params)
    enters, exits = con.execute(
        "select (select count(*) from _enters), (select count(*) from _exits)"
    ).fetchone()
    size = con.execute(
        "select count(*) from segops.segment_membership where segment = ?", [segment]
    ).fetchone()[0]
    return MembershipDelta(segment=segment, size=size, enters=enters, exits=exits)


def _stage_found(
    con: duckdb.DuckDBPyConnection, segment: str, members: str, scope: str | None
) -> None:
    """Copy the members into `_found` (customer_id, attributes json), checking the contract."""
    columns = [row[0] for row in con.execute(f"describe {members}").fetchall()]
    if "customer_id" not in columns:
        raise SegmentContractError(
            f"segment {segment!r} has no customer_id column (columns: {', '.join(columns)})"
        )
    attributes = [c for c in columns if c != "customer_id"]
    attributes_json = (
        "to_json(struct_pack(" + ", ".join(f"{quote(c)} := {quote(c)}" for c in attributes) + "))"
        if attributes
        else "null::json"
    )
    in_scope = "" if scope is None else f"where customer_id in (select customer_id from {scope})"
    con.execute(
        f"""
        create or replace temp table _found as
        select cast(customer_id as varchar) as customer_id, {attributes_json} as attributes
        from {members} {in_scope}
        """
    )
    nulls, duplicates, sample = con.execute(
        """
        select
            count(*) filter (where customer_id is null),
            count(customer_id) - count(distinct customer_id),
            (select list(customer_id) from (
                select customer_id from _found where customer_id is not null
                group by customer_id having count(*) > 1 order by customer_id limit 3))
        from _found
        """
    ).fetchone()
    if nulls:
        raise SegmentContractError(f"segment {segment!r} has {nulls} rows with a null customer_id")
    if duplicates:
        raise SegmentContractError(
            f"segment {segment!r} has {duplicates} duplicate customer_id rows "
            f"(one row per member expected), e.g. {', '.join(sample)}"
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
