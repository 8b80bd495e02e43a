"""Rewrite a segment's compiled SQL to evaluate only a given set of customers.

The real-time path evaluates a segment for the customers a micro-batch touched, so its cost
follows the batch, not the history. Every source the segment reads (directly or through views)
is replaced by a copy holding only the rows of the customers in scope; upstream views are
inlined so the copies replace the base tables. Since a real-time segment depends only
on each customer's own rows, the scoped result equals the full result restricted to the scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import sqlglot
from sqlglot import exp

from segops.catalog import Catalog, Model, Segment
from segops.membership import SegmentContractError
from segops.sql import DIALECT


@dataclass(frozen=True)
class ScopedQuery:
    """A segment's SQL reading per-batch copies of its sources instead of the sources."""

    segment: str
    sql: str
    sources: dict[str, str]  # copy table name -> source relation it stands for
    intervals: tuple[timedelta, ...]  # offsets after an event at which "now" can flip membership


def scoped_query(catalog: Catalog, segment: Segment) -> ScopedQuery:
    """Rewrite the segment so every source it reads, directly or through views, is a copy.

    The caller fills each copy with the source's rows for the customers in scope.
    """
    if segment.compiled_sql is None:
        raise SegmentContractError(
            f"segment {segment.name!r} has no compiled SQL in the manifest; run `dbt compile`"
        )
    tree = sqlglot.parse_one(segment.compiled_sql, read=DIALECT)
    problem = ranking_problem(tree)
    if problem:
        raise SegmentContractError(
            f"segment {segment.name!r} ({segment.original_file}) cannot be real-time: {problem}; "
            "make it nightly"
        )
    sources: dict[str, str] = {}
    scoped = _scope_tree(tree, _nodes_by_relation(catalog), sources)
    return ScopedQuery(
        segment=segment.name,
        sql=scoped.sql(dialect=DIALECT),
        sources=sources,
        intervals=tuple(sorted({i for i in map(_interval, scoped.find_all(exp.Interval)) if i})),
    )


def ranking_problem(tree: exp.Expression) -> str | None:
    """Why membership would depend on other customers' rows, or None if it does not."""
    for window in tree.find_all(exp.Window):
        partition = window.args.get("partition_by") or []
        if not any(isinstance(p, exp.Column) and p.name == "customer_id" for p in partition):
            return (
                f"it ranks or compares customers against each other ({window.sql(DIALECT)} "
                "is not partitioned by customer_id)"
            )
    for select in tree.find_all(exp.Select):
        aggregates = [a for a in select.expressions if a.find(exp.AggFunc)]
        if aggregates and not select.args.get("group") and not _is_correlated(select):
            return (
                "it aggregates across all customers "
                f"({aggregates[0].sql(DIALECT)} without group by customer_id)"
            )
    return None


def _is_correlated(select: exp.Select) -> bool:
    """A scalar subquery that refers to an outer customer (per-customer, so allowed)."""
    where = select.args.get("where")
    return select.parent is not None and where is not None and bool(
        [c for c in where.find_all(exp.Column) if c.name == "customer_id"]
    )


def _relation_key(relation: str) -> tuple[str, str]:
    table = exp.to_table(relation, dialect=DIALECT)
    return (table.db.lower(), table.name.lower())


def _nodes_by_relation(catalog: Catalog) -> dict[tuple[str, str], Model]:
    return {_relation_key(m.relation): m for m in catalog.nodes.values() if m.relation}


def copy_table_name(source: Model) -> str:
    return "_scoped_" + "_".join(_relation_key(source.relation))


def _scope_tree(
    tree: exp.Expression, by_relation: dict[tuple[str, str], Model], sources: dict[str, str]
) -> exp.Expression:
    def replace(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Table) or not node.db:
            return node
        model = by_relation.get((node.db.lower(), node.name.lower()))
        if model is None:
            return node
        alias = exp.TableAlias(this=exp.to_identifier(node.alias or node.name))
        if model.resource_type == "source":
            copy = copy_table_name(model)
            sources[copy] = model.relation
            return exp.Table(this=exp.to_identifier(copy), alias=alias)
        if model.materialized == "view" and model.compiled_sql:
            inner = _scope_tree(sqlglot.parse_one(model.compiled_sql, read=DIALECT), by_relation,
                                sources)
            return exp.Subquery(this=inner, alias=alias)
        return node

    return tree.transform(replace)


def _interval(node: exp.Interval) -> timedelta | None:
    """An interval literal such as interval '30 minutes' as a timedelta (None if not constant)."""
    text = f"{node.this.name} {node.unit.name if node.unit else ''}".strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]+?)s?", text)
    if not match or match.group(2) not in _UNITS:
        return None
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


_UNITS = {
    "second": "seconds", "minute": "minutes", "hour": "hours", "day": "days", "week": "weeks",
}
