"""The one membership writer: enters, exits, scope, history and the segment contract."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from segops.membership import (
    SegmentContractError,
    apply_membership,
    current_members,
    customer_history,
    members_at,
    members_query,
    stage_found,
)
from segops.schema import ensure_schema
from segops.warehouse import connect, transaction

T0 = datetime(2026, 6, 1, 12, 0, 0)


@pytest.fixture
def con(tmp_path):
    with connect(tmp_path / "warehouse.duckdb") as con:
        ensure_schema(con)
        yield con


def evaluate(con, members, *, scope=None, at=T0, source="batch", segment="vip", sizes=True):
    """Stage `members` (customer_id -> tier) and an optional scope, then apply them."""
    con.execute("create or replace temp table m (customer_id varchar, tier varchar)")
    for customer_id, tier in members.items():
        con.execute("insert into m values (?, ?)", [customer_id, tier])
    scope_table = None
    if scope is not None:
        con.execute("create or replace temp table s (customer_id varchar)")
        for customer_id in scope:
            con.execute("insert into s values (?)", [customer_id])
        scope_table = "s"
    with transaction(con):
        return apply(con, segment, "m", scope=scope_table, source=source, at=at, sizes=sizes)


def apply(con, segment, members, *, scope=None, source="batch", at=T0, sizes=True):
    stage_found(con, {segment: members_query(con, segment, members)})
    (delta,) = apply_membership(
        con, segments=[segment], scope=scope, source=source, changed_at=at, sizes=sizes
    )
    return delta


def ids(frame):
    return sorted(frame["customer_id"])


def test_first_evaluation_enters_everyone(con):
    delta = evaluate(con, {"a": "gold", "b": "silver"})
    assert (delta.size, delta.enters, delta.exits) == (2, 2, 0)
    assert ids(current_members(con, "vip")) == ["a", "b"]
    changes = con.execute(
        "select customer_id, change, source from segops.segment_membership_changes order by 1"
    ).fetchall()
    assert changes == [("a", "enter", "batch"), ("b", "enter", "batch")]


def test_second_run_records_only_the_difference(con):
    evaluate(con, {"a": "gold", "b": "silver"})
    delta = evaluate(con, {"b": "gold", "c": "silver"}, at=T0 + timedelta(days=1))
    assert (delta.size, delta.enters, delta.exits) == (2, 1, 1)
    assert ids(current_members(con, "vip")) == ["b", "c"]
    b = current_members(con, "vip").set_index("customer_id").loc["b"]
    assert b["entered_at"] == T0, "staying members keep their entry time"
    assert '"gold"' in b["attributes"], "attributes follow the latest evaluation"


def test_without_sizes_the_changes_are_the_same_and_the_count_is_skipped(con):
    evaluate(con, {"a": "gold", "b": "silver"})
    delta = evaluate(con, {"b": "gold"}, at=T0 + timedelta(hours=1), sizes=False)
    assert (delta.size, delta.enters, delta.exits) == (None, 0, 1)
    assert ids(current_members(con, "vip")) == ["b"]


def test_unchanged_membership_writes_no_change(con):
    evaluate(con, {"a": "gold"})
    delta = evaluate(con, {"a": "gold"}, at=T0 + timedelta(hours=1))
    assert (delta.enters, delta.exits) == (0, 0)
    assert con.execute("select count(*) from segops.segment_membership_changes").fetchone() == (1,)


def test_scoped_evaluation_only_touches_customers_in_scope(con):
    evaluate(con, {"a": "gold", "b": "gold"})
    delta = evaluate(con, {"c": "gold"}, scope=["a", "c"], source="realtime")
    assert (delta.enters, delta.exits) == (1, 1)
    assert ids(current_members(con, "vip")) == ["b", "c"], "b was not in scope, so it stays"


def test_members_outside_scope_are_ignored(con):
    delta = evaluate(con, {"a": "gold", "z": "gold"}, scope=["a"], source="realtime")
    assert delta.enters == 1
    assert ids(current_members(con, "vip")) == ["a"]


def test_segments_are_independent(con):
    evaluate(con, {"a": "gold"}, segment="vip")
    evaluate(con, {}, segment="churn")
    assert ids(current_members(con, "vip")) == ["a"]


def test_point_in_time_reads_replay_history(con):
    evaluate(con, {"a": "x", "b": "x"}, at=T0)
    evaluate(con, {"b": "x", "c": "x"}, at=T0 + timedelta(hours=2))
    evaluate(con, {"a": "x", "c": "x"}, at=T0 + timedelta(hours=4))
    assert ids(members_at(con, "vip", T0 - timedelta(seconds=1))) == []
    assert ids(members_at(con, "vip", T0)) == ["a", "b"]
    assert ids(members_at(con, "vip", T0 + timedelta(hours=3))) == ["b", "c"]
    assert ids(members_at(con, "vip", T0 + timedelta(hours=5))) == ["a", "c"]
    history = customer_history(con, "a")
    assert list(history["change"]) == ["enter", "exit", "enter"]


def test_duplicate_members_are_refused_with_the_segment_name(con):
    con.execute("create temp table dup as select unnest(['a', 'a', 'b']) as customer_id")
    with pytest.raises(SegmentContractError, match=r"'vip' has 1 duplicate customer_id.*a"):
        apply(con, "vip", "dup")


def test_missing_customer_id_is_refused(con):
    con.execute("create temp table nocid as select 'a' as user_id")
    with pytest.raises(SegmentContractError, match=r"'vip' has no customer_id column"):
        apply(con, "vip", "nocid")


def test_null_customer_id_is_refused(con):
    con.execute("create temp table nulls as select null::varchar as customer_id")
    with pytest.raises(SegmentContractError, match="null customer_id"):
        apply(con, "vip", "nulls")


def test_failed_evaluation_leaves_membership_untouched(con):
    evaluate(con, {"a": "gold"})
    con.execute("create temp table dup as select * from (values ('b'), ('b')) t(customer_id)")
    with pytest.raises(SegmentContractError), transaction(con):
        apply(con, "vip", "dup")
    assert ids(current_members(con, "vip")) == ["a"]
