"""Property test of the one membership writer: any run of scoped evaluations keeps the current
table, the change history and point-in-time reads in agreement with a simple model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from segops.membership import apply_membership, members_at, members_query, stage_found
from segops.schema import ensure_schema
from segops.warehouse import transaction

T0 = datetime(2026, 6, 1, 12, 0, 0)
SEGMENTS = ("vip", "churn")
POOL = ("a", "b", "c", "d", "e")
TIERS = ("gold", "silver")

Pair = tuple[str, str]


@dataclass(frozen=True)
class Step:
    segment: str
    scope: frozenset[str] | None  # None: everyone was evaluated
    found: dict[str, str]  # in-scope members found -> tier
    stray: frozenset[str]  # found but outside the scope: the writer must ignore them
    source: str
    gap: timedelta  # after the previous step; zero gives equal timestamps


@st.composite
def steps(draw: st.DrawFn) -> Step:
    """One evaluation; small segment and customer sets so histories revisit the same pairs."""
    scope = draw(st.none() | st.frozensets(st.sampled_from(POOL)))
    evaluated = sorted(POOL if scope is None else scope)
    found_ids = draw(st.sets(st.sampled_from(evaluated))) if evaluated else set()
    found = {c: draw(st.sampled_from(TIERS)) for c in sorted(found_ids)}
    outside = sorted(set(POOL) - set(evaluated))
    stray = draw(st.frozensets(st.sampled_from(outside))) if outside else frozenset()
    return Step(
        segment=draw(st.sampled_from(SEGMENTS)),
        scope=scope,
        found=found,
        stray=stray,
        source=draw(st.sampled_from(("batch", "realtime"))),
        gap=timedelta(minutes=draw(st.sampled_from((0, 1, 5)))),
    )


def fresh_warehouse() -> duckdb.DuckDBPyConnection:
    """A throwaway in-memory warehouse per example, set up like segops.warehouse.connect."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'; set enable_progress_bar = false")
    ensure_schema(con)
    return con


def evaluate(con: duckdb.DuckDBPyConnection, step: Step, at: datetime):
    """Stage the step's members and scope the way the batch and stream callers do, then apply."""
    con.execute("create or replace temp table m (customer_id varchar, tier varchar)")
    rows = [*step.found.items(), *((c, "stray") for c in sorted(step.stray))]
    if rows:
        con.executemany("insert into m values (?, ?)", rows)
    scope_table = None
    if step.scope is not None:
        con.execute("create or replace temp table s (customer_id varchar)")
        if step.scope:
            con.executemany("insert into s values (?)", [[c] for c in sorted(step.scope)])
        scope_table = "s"
    with transaction(con):
        stage_found(con, {step.segment: members_query(con, step.segment, "m")})
        (delta,) = apply_membership(
            con, segments=[step.segment], scope=scope_table, source=step.source, changed_at=at
        )
    return delta


def current(con: duckdb.DuckDBPyConnection) -> dict[Pair, datetime]:
    rows = con.execute(
        "select segment, customer_id, entered_at from segops.segment_membership"
    ).fetchall()
    return {(s, c): at for s, c, at in rows}


def changes(con: duckdb.DuckDBPyConnection, after_id: int = 0) -> list[tuple]:
    return con.execute(
        """
        select change_id, segment, customer_id, change, changed_at, source
        from segops.segment_membership_changes where change_id > ? order by change_id
        """,
        [after_id],
    ).fetchall()


def replay(rows: list[tuple]) -> dict[Pair, datetime]:
    """Membership rebuilt from the history alone: enter adds the pair, exit removes it."""
    members: dict[Pair, datetime] = {}
    for _, segment, customer_id, change, changed_at, _ in rows:
        if change == "enter":
            members[(segment, customer_id)] = changed_at
        else:
            members.pop((segment, customer_id), None)
    return members


def of_segment(members: dict[Pair, datetime], segment: str) -> dict[str, datetime]:
    return {c: at for (s, c), at in members.items() if s == segment}


def as_of(frame: pd.DataFrame) -> dict[str, datetime]:
    return {c: pd.Timestamp(at).to_pydatetime()
            for c, at in zip(frame["customer_id"], frame["entered_at"], strict=True)}


@settings(max_examples=100, deadline=None)
@given(st.lists(steps(), min_size=1, max_size=12))
def test_membership_table_history_and_point_in_time_agree(run: list[Step]):
    """Batch and stream both write through apply_membership, so any interleaving of full and
    scoped evaluations must leave the table equal to its history, with exact scoped updates."""
    con = fresh_warehouse()
    try:
        model: dict[Pair, datetime] = {}
        snapshots: dict[datetime, dict[Pair, datetime]] = {}  # last state at each timestamp
        at = T0
        last_id = 0
        for step in run:
            at += step.gap
            evaluated = set(POOL) if step.scope is None else step.scope
            before = dict(model)
            delta = evaluate(con, step, at)

            # (b) in scope, membership becomes exactly the members found; nothing else moves.
            # With scope None every existing member of the segment was evaluated.
            leaving = {k for k in model if k[0] == step.segment
                       and (step.scope is None or k[1] in evaluated) and k[1] not in step.found}
            entering = {(step.segment, c) for c in step.found} - set(model)
            for key in leaving:
                del model[key]
            for key in entering:
                model[key] = at
            assert current(con) == model

            assert (delta.segment, delta.size, delta.enters, delta.exits) == (
                step.segment, len(of_segment(model, step.segment)), len(entering), len(leaving)
            )
            new = changes(con, last_id)
            assert {(s, c, ch) for _, s, c, ch, _, _ in new} == (
                {(s, c, "enter") for s, c in entering} | {(s, c, "exit") for s, c in leaving}
            )
            assert all(t == at and src == step.source for *_, t, src in new)
            assert len(new) == len(entering) + len(leaving)
            last_id = max([last_id, *(row[0] for row in new)])
            assert replay(changes(con)) == current(con) == model, before
            snapshots[at] = dict(model)

        history = changes(con)
        assert replay(history) == current(con)

        # (a) per pair the history alternates enter, exit, enter, ... starting with an enter.
        last_change: dict[Pair, str] = {}
        for _, segment, customer_id, change, _, _ in history:
            expected = "exit" if last_change.get((segment, customer_id)) == "enter" else "enter"
            assert change == expected, (segment, customer_id, history)
            last_change[(segment, customer_id)] = change

        # (c) members_at(t) is the state after the last step stamped t (ties: latest change wins).
        for t, state in snapshots.items():
            for segment in SEGMENTS:
                assert as_of(members_at(con, segment, t)) == of_segment(state, segment), t
        for segment in SEGMENTS:
            assert members_at(con, segment, T0 - timedelta(seconds=1)).empty
    finally:
        con.close()
