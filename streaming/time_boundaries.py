"""Where the passing of time alone can move a customer into or out of a real-time segment.

A segment's truth can change with no event only where it compares something with
`segops_now()`. Every such comparison (`<`, `<=`, `>`, `>=`, `=`, `between`, now on either side)
is read as `value OP f(now)`: `f` is any expression of now alone that never runs backwards
(`now - interval '30 minutes'`, `to_minutes(30)`, `date_trunc('day', now)`), checked by running
it in DuckDB at sample times; `value` is an expression of the customer's own rows, traced back
through the views and CTEs it comes from to the columns of the sources it reads (`max` and
`min` of a column, and window functions that pick a row's value, are one of that column's
values). Between two evaluations at `since` and `now`, such a comparison can flip only for rows
whose value lies between `f(since)` and `f(now)`: those customers are swept.

What cannot be read that way (now inside `extract(hour ...)`, a non-constant interval, an
attribute computed from now, a bare `now()`) makes the segment unbounded in time: it is refused
as real-time unless it declares a periodic full re-evaluation (`meta.segment.reevaluate_every`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import duckdb
import sqlglot
from sqlglot import exp

from segops.sql import DIALECT, literal

MARKER = "__SEGOPS_NOW__"
COMPARISONS = (exp.LT, exp.LTE, exp.GT, exp.GTE, exp.EQ, exp.NEQ)
# Nodes a use of now may pass through on its way up to a comparison without being lost.
STOPS = (exp.Connector, exp.Not, exp.Where, exp.Having, exp.Qualify, exp.Select, exp.Alias,
         exp.Case, exp.If, exp.Join, exp.Subquery, exp.Window, exp.Ordered)
CLOCKS = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.CurrentDatetime)
# Functions whose result is one of their argument's values (a row's value, not a mix of rows).
PICKING = (exp.Max, exp.Min, exp.AnyValue, exp.First, exp.Last, exp.FirstValue, exp.LastValue,
           exp.NthValue, exp.Lag, exp.Lead, exp.ArgMax, exp.ArgMin)
MAX_VARIANTS = 64
# Sample times, increasing, spread over years, month ends, leap days and midnights, at which
# f(now) must never run backwards.
SAMPLES = sorted({
    datetime(2031, 1, 1) + timedelta(days=d, seconds=s)
    for d, s in itertools.product(range(0, 1500, 29), (0, 1, 43_199, 86_399))
} | {datetime(2032, 2, 28, 23, 59, 59), datetime(2032, 2, 29), datetime(2032, 3, 1),
      datetime(2031, 12, 31, 23, 59, 59, 999_999), datetime(2032, 1, 1)})
SAMPLES_SQL = "[" + ", ".join(f"timestamp '{at.isoformat(sep=' ')}'" for at in SAMPLES) + "]"


@dataclass(frozen=True)
class Boundary:
    """`value OP f(now)`: `value_sql` over source columns, `now_sql` with MARKER for now."""

    value_sql: str
    now_sql: str

    def now_at(self, parameter: str) -> str:
        """`f(now)` with now bound to the named query parameter."""
        return self.now_sql.replace(f"{MARKER}()", f"cast(${parameter} as timestamp)")

    def now_at_time(self, moment: datetime) -> str:
        """`f(now)` with now as the timestamp `moment`, for SQL bound to no parameters."""
        return self.now_sql.replace(f"{MARKER}()", f"timestamp '{moment.isoformat(sep=' ')}'")

    @property
    def columns(self) -> frozenset[str]:
        return frozenset(c.name.lower() for c in _parse(self.value_sql).find_all(exp.Column))


@dataclass(frozen=True)
class TimeDependence:
    # One group per comparison: the value as each source might hold it (see `_variants`);
    # at least one of them must be a source's.
    boundaries: tuple[tuple[Boundary, ...], ...]
    unbounded: tuple[str, ...]  # why, for each use of now no boundary describes


def time_dependence(tree: exp.Expression) -> TimeDependence:
    """The boundaries of every use of `segops_now()` in `tree` (a segment's SQL with its views
    inlined), and the uses that have none."""
    tree = tree.copy()
    for node in list(tree.find_all(exp.Coalesce)):
        if node.parent is not None and _is_segops_now(node):
            node.replace(exp.Anonymous(this=MARKER))
    unbounded = [
        f"{node.sql(DIALECT)} reads the clock itself; use {{{{ segops_now() }}}}"
        for node in tree.walk()
        if isinstance(node, CLOCKS) or (isinstance(node, exp.Anonymous)
                                        and node.name.lower() in ("now", "get_current_time"))
    ]
    definitions = _definitions(tree)
    groups: dict[tuple[Boundary, ...], None] = {}
    for marker in [n for n in tree.walk() if _is_marker(n)]:
        try:
            for value, now_side in _comparisons(marker):
                _check_now_side(now_side)
                now_sql = now_side.sql(DIALECT)
                groups[tuple(Boundary(variant.sql(DIALECT), now_sql)
                             for variant in _variants(value, definitions))] = None
        except Unbounded as reason:
            unbounded.append(str(reason))
    return TimeDependence(tuple(groups), tuple(dict.fromkeys(unbounded)))


class Unbounded(Exception):
    """A use of now whose effect on membership no sweep can follow."""


def _is_segops_now(node: exp.Coalesce) -> bool:
    return any(isinstance(n, exp.Anonymous) and n.name.upper() == "GETVARIABLE"
               and "segops_now" in n.sql(DIALECT) for n in node.walk())


def _is_marker(node: exp.Expression) -> bool:
    return isinstance(node, exp.Anonymous) and node.name == MARKER


def _comparisons(marker: exp.Expression) -> list[tuple[exp.Expression, exp.Expression]]:
    """(value side, now side) of the comparison this use of now sits in."""
    side = marker
    while side.parent is not None and not isinstance(side.parent, (*COMPARISONS, exp.Between)):
        if isinstance(side.parent, STOPS):
            break
        side = side.parent
    comparison = side.parent
    if isinstance(comparison, COMPARISONS):
        other = comparison.expression if side is comparison.this else comparison.this
        return [(other, side)]
    if isinstance(comparison, exp.Between):
        if side is comparison.this:  # now between a and b: a <= now and now <= b
            return [(comparison.args["low"], side), (comparison.args["high"], side)]
        return [(comparison.this, side)]
    raise Unbounded(f"{_context(marker)} uses segops_now() outside a comparison")


def _context(node: exp.Expression) -> str:
    """The smallest expression around `node` worth quoting in a message."""
    while node.parent is not None and not isinstance(node.parent, STOPS):
        node = node.parent
    return node.sql(DIALECT).replace(f"{MARKER}()", "segops_now()")


def _check_now_side(now_side: exp.Expression) -> None:
    """`f(now)` must depend on now alone and never run backwards as now advances."""
    text = now_side.sql(DIALECT)
    shown = text.replace(f"{MARKER}()", "segops_now()")
    if any(now_side.find_all(exp.Column)) or any(now_side.find_all(exp.Subquery)):
        raise Unbounded(f"{shown} is not a fixed shift of segops_now() (it reads a column)")
    if not _never_runs_backwards(text):
        raise Unbounded(f"{shown} does not move forward with segops_now()")


@cache
def _never_runs_backwards(now_sql: str) -> bool:
    """Whether `f(now)` is a time (or number) that never decreases over the sample times;
    raises Unbounded with DuckDB's words when it cannot be evaluated at all. One query
    evaluates it at every sample."""
    try:
        rows = _scratch().execute(
            f"select {now_sql.replace(f'{MARKER}()', 'sample')} "
            f"from unnest({SAMPLES_SQL}) as samples (sample) order by sample"
        ).fetchall()
    except duckdb.Error as error:
        shown = now_sql.replace(f"{MARKER}()", "segops_now()")
        raise Unbounded(f"{shown} cannot be evaluated ({str(error).splitlines()[0]})"
                        ) from None
    values = [value for (value,) in rows]
    if any(value is None or isinstance(value, bool | str) for value in values):
        return False
    return all(a <= b for a, b in itertools.pairwise(values))


def interval(text: str) -> timedelta | None:
    """An interval as DuckDB reads it ('5 minutes', '1 hour 30 minutes'), or None."""
    try:
        (seconds,) = _scratch().execute(
            f"select epoch(cast({literal(text)} as interval))").fetchone()
    except duckdb.Error:
        return None
    return timedelta(seconds=seconds)


@cache
def _scratch() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for checking expressions: the same engine that runs the segments."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    return con


def _definitions(tree: exp.Expression) -> dict[str, list[exp.Expression]]:
    """Every expression an output column name is given anywhere in the segment's SQL."""
    found: dict[str, list[exp.Expression]] = {}
    for alias in tree.find_all(exp.Alias):
        expression = alias.this
        if isinstance(expression, exp.Column) and expression.name == alias.alias:
            continue
        found.setdefault(alias.alias.lower(), []).append(expression)
    return found


def _variants(value: exp.Expression, definitions: dict[str, list[exp.Expression]]
              ) -> list[exp.Expression]:
    """`value` in terms of source columns: each column named by an alias is replaced by each
    expression it is given (and kept as it is, in case a source has it), transitively."""
    start = _row_value(value)
    if not any(start.find_all(exp.Column)):
        raise Unbounded(f"{_context(value)} compares segops_now() with no column of a customer")
    seen = {start.sql(DIALECT): start}
    queue = [start]
    while queue:
        current = queue.pop()
        for column in {c.name.lower() for c in current.find_all(exp.Column)}:
            for definition in definitions.get(column, []):
                variant = _row_value(_substitute(current, column, definition))
                key = variant.sql(DIALECT)
                if key not in seen:
                    if len(seen) >= MAX_VARIANTS:
                        raise Unbounded(f"{_context(value)} is defined in too many ways to follow")
                    seen[key] = variant
                    queue.append(variant)
    return list(seen.values())


def _row_value(value: exp.Expression) -> exp.Expression:
    """`value` as an expression of one row: functions that pick a row's value are replaced by
    their argument; any other aggregate or window mixes rows and cannot be followed."""
    original = value

    def unwrap(node: exp.Expression) -> exp.Expression:
        # A scalar subquery picking one row's value (`(select max(e.occurred_at) from ... where
        # ...)`) is that value; its filters are comparisons of their own.
        if (isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select)
                and len(node.this.expressions) == 1):
            return unwrap(node.this.expressions[0].unalias())
        if isinstance(node, exp.Window | exp.Paren) or (
                isinstance(node, PICKING) and isinstance(node.this, exp.Expression)):
            return unwrap(node.this)
        if isinstance(node, exp.AggFunc | exp.Subquery):
            raise Unbounded(
                f"{original.sql(DIALECT)} is compared with segops_now() but mixes several rows")
        return node

    value = unwrap(value.copy()).transform(unwrap)
    if any(_is_marker(n) for n in value.walk()):
        raise Unbounded(f"{_context(original)} compares segops_now() with itself")
    for column in value.find_all(exp.Column):
        column.set("table", None)
        column.set("db", None)
        column.set("catalog", None)
    return value


def _substitute(value: exp.Expression, column: str, definition: exp.Expression
                ) -> exp.Expression:
    def replacement() -> exp.Expression:
        copy = definition.copy()
        return copy if isinstance(copy, exp.Column) else exp.Paren(this=copy)

    if isinstance(value, exp.Column):
        return replacement() if value.name.lower() == column else value.copy()
    value = value.copy()
    for node in list(value.find_all(exp.Column)):
        if node.name.lower() == column:
            node.replace(replacement())
    return value


@cache
def _parse(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read=DIALECT)
