"""The membership writer on PostgreSQL: scope, independent segments, history read back at any
moment, and the segment contract, checked where a writer stages what a segment found (in
DuckDB, before anything reaches PostgreSQL). Enters, exits and repeats are in
test_live_membership."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import psycopg
import pytest

from segops.live_membership import apply_found
from segops.live_state import read_live_state
from segops.membership import (
    SegmentContractError,
    current_members,
    customer_history,
    members_at,
    members_query,
    stage_found,
)

T0 = datetime(2026, 6, 1, 12, 0, 0)


def found(members: str, segment: str = "vip") -> list[tuple[str, str, str | None]]:
    """What a segment's `members` (a parenthesised query) found, staged as the nightly and the
    stream stage it: through members_query and stage_found, so the contract is checked."""
    with duckdb.connect() as con:
        stage_found(con, {segment: members_query(con, segment, members)})
        return con.execute("select segment, customer_id, attributes::varchar from _found"
                           ).fetchall()


def tiers(members: dict[str, str]) -> str:
    rows = ", ".join(f"('{customer}', '{tier}')" for customer, tier in members.items())
    return (f"(select * from (values {rows}) as m (customer_id, tier))" if members
            else "(select ''::varchar as customer_id, ''::varchar as tier where false)")


def evaluate(pg: psycopg.Connection, members: dict[str, str], *, scope=None, at=T0,
             source="batch", segment="vip"):
    """Stage `members` (customer_id -> tier), then apply them for `scope` (None: everyone)."""
    with pg.transaction():
        return apply_found(pg, found(tiers(members), segment), segments=[segment],
                           customers=scope, source=source, changed_at=at)


@pytest.fixture
def pg(live_dsn):
    with psycopg.connect(live_dsn) as con:
        yield con


@pytest.fixture
def reader(settings, live_dsn):
    """A reader of the live state in PostgreSQL, opened as the product's readers open it."""
    def read(call, *args):
        with read_live_state(live_dsn) as con:
            return call(con, *args)
    return read


def ids(frame) -> list[str]:
    return sorted(frame["customer_id"])


def test_members_outside_scope_are_ignored(pg, reader):
    changes = evaluate(pg, {"a": "gold", "z": "gold"}, scope=["a"], source="realtime")
    assert changes == {("vip", "enter"): 1}
    assert ids(reader(current_members, "vip")) == ["a"]


def test_segments_are_independent(pg, reader):
    evaluate(pg, {"a": "gold"}, segment="vip")
    evaluate(pg, {}, segment="churn")
    assert ids(reader(current_members, "vip")) == ["a"]


def test_point_in_time_reads_replay_history(pg, reader):
    evaluate(pg, {"a": "x", "b": "x"}, at=T0)
    evaluate(pg, {"b": "x", "c": "x"}, at=T0 + timedelta(hours=2))
    evaluate(pg, {"a": "x", "c": "x"}, at=T0 + timedelta(hours=4))
    assert ids(reader(members_at, "vip", T0 - timedelta(seconds=1))) == []
    assert ids(reader(members_at, "vip", T0)) == ["a", "b"]
    assert ids(reader(members_at, "vip", T0 + timedelta(hours=3))) == ["b", "c"]
    assert ids(reader(members_at, "vip", T0 + timedelta(hours=5))) == ["a", "c"]
    assert list(reader(customer_history, "a")["change"]) == ["enter", "exit", "enter"]


def test_duplicate_members_are_refused_with_the_segment_name():
    with pytest.raises(SegmentContractError, match=r"'vip' has 1 duplicate customer_id.*a"):
        found("(select unnest(['a', 'a', 'b']) as customer_id)")


def test_missing_customer_id_is_refused():
    with pytest.raises(SegmentContractError, match=r"'vip' has no customer_id column"):
        found("(select 'a' as user_id)")


def test_null_customer_id_is_refused():
    with pytest.raises(SegmentContractError, match="null customer_id"):
        found("(select null::varchar as customer_id)")


def test_failed_evaluation_leaves_membership_untouched(pg, reader):
    evaluate(pg, {"a": "gold"})
    with pytest.raises(SegmentContractError), pg.transaction():
        apply_found(pg, [], segments=["vip"], customers=None, source="batch",
                    changed_at=T0 + timedelta(hours=1))  # a exits, then in the same batch...
        found("(select * from (values ('b'), ('b')) t(customer_id))")  # ...a segment fails
    assert ids(reader(current_members, "vip")) == ["a"]
    assert len(reader(customer_history, "a")) == 1, "the batch's writes rolled back"
