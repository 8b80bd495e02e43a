"""Property test of the one membership writer (PostgreSQL's apply_found): any run of scoped
evaluations keeps the current table, the change history and point-in-time reads (through
read_live_state, as the product reads them) in agreement with a simple model."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import psycopg
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from segops.live_membership import apply_found
from segops.live_state import read_live_state
from segops.membership import members_at

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


def evaluate(pg: psycopg.Connection, step: Step, at: datetime) -> Counter:
    """Apply the step's members (strays included: the writer must ignore them) for its scope,
    in one transaction as the batch and the stream do."""
    found = [(step.segment, c, json.dumps({"tier": tier})) for c, tier in step.found.items()]
    found += [(step.segment, c, '{"tier": "stray"}') for c in sorted(step.stray)]
    with pg.transaction():
        return apply_found(pg, found, segments=[step.segment],
                           customers=None if step.scope is None else sorted(step.scope),
                           source=step.source, changed_at=at)


def current(pg: psycopg.Connection) -> dict[Pair, datetime]:
    rows = pg.execute(
        "select segment, customer_id, entered_at from segops.segment_membership"
    ).fetchall()
    return {(s, c): at for s, c, at in rows}


def changes(pg: psycopg.Connection, after_id: int = 0) -> list[tuple]:
    return pg.execute(
        """
        select change_id, segment, customer_id, change, changed_at, source
        from segops.segment_membership_changes where change_id > %s order by change_id
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


@examples(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=st.lists(steps(), min_size=1, max_size=12))
def test_membership_table_history_and_point_in_time_agree(settings, live_dsn, run: list[Step]):
    """Batch and stream both write through apply_found, so any interleaving of full and
    scoped evaluations must leave the table equal to its history, with exact scoped updates.
    One database for every example, emptied before each: one per example would cost more
    than the example."""
    with psycopg.connect(live_dsn) as pg:
        with pg.transaction():
            pg.execute("truncate segops.segment_membership, segops.segment_membership_changes "
                       "restart identity")
        model: dict[Pair, datetime] = {}
        snapshots: dict[datetime, dict[Pair, datetime]] = {}  # last state at each timestamp
        at = T0
        last_id = 0
        for step in run:
            at += step.gap
            evaluated = set(POOL) if step.scope is None else step.scope
            before = dict(model)
            delta = evaluate(pg, step, at)

            # (b) in scope, membership becomes exactly the members found; nothing else moves.
            # With scope None every existing member of the segment was evaluated.
            leaving = {k for k in model if k[0] == step.segment
                       and (step.scope is None or k[1] in evaluated) and k[1] not in step.found}
            entering = {(step.segment, c) for c in step.found} - set(model)
            for key in leaving:
                del model[key]
            for key in entering:
                model[key] = at
            assert current(pg) == model

            assert (delta[(step.segment, "enter")], delta[(step.segment, "exit")]) == (
                len(entering), len(leaving))
            assert set(delta) <= {(step.segment, "enter"), (step.segment, "exit")}
            new = changes(pg, last_id)
            assert {(s, c, ch) for _, s, c, ch, _, _ in new} == (
                {(s, c, "enter") for s, c in entering} | {(s, c, "exit") for s, c in leaving}
            )
            assert all(t == at and src == step.source for *_, t, src in new)
            assert len(new) == len(entering) + len(leaving)
            last_id = max([last_id, *(row[0] for row in new)])
            assert replay(changes(pg)) == current(pg) == model, before
            snapshots[at] = dict(model)

        history = changes(pg)
        assert replay(history) == current(pg)

    # (a) per pair the history alternates enter, exit, enter, ... starting with an enter.
    last_change: dict[Pair, str] = {}
    for _, segment, customer_id, change, _, _ in history:
        expected = "exit" if last_change.get((segment, customer_id)) == "enter" else "enter"
        assert change == expected, (segment, customer_id, history)
        last_change[(segment, customer_id)] = change

    # (c) members_at(t) is the state after the last step stamped t (ties: latest change wins).
    with read_live_state(live_dsn) as reader:
        for t, state in snapshots.items():
            for segment in SEGMENTS:
                assert as_of(members_at(reader, segment, t)) == of_segment(state, segment), t
        for segment in SEGMENTS:
            assert members_at(reader, segment, T0 - timedelta(seconds=1)).empty
