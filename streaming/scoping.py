"""Rewrite a segment's compiled SQL to evaluate only a given set of customers.

The real-time path evaluates a segment for the customers a micro-batch touched, so its cost
follows the batch, not the history. Every source the segment reads (directly or through views)
is replaced by a name of its own that reads only the rows of the customers in scope; upstream
views are inlined so these names replace the base tables. Since a real-time segment depends only
on each customer's own rows, the scoped result equals the full result restricted to the scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlglot
from sqlglot import exp

from segops.catalog import Catalog, Model, Segment
from segops.membership import SegmentContractError
from segops.sql import DIALECT
from streaming.time_boundaries import Boundary, interval, time_dependence


@dataclass(frozen=True)
class ScopedQuery:
    """A segment's SQL reading per-batch copies of its sources instead of the sources."""

    segment: str
    sql: str
    sources: dict[str, str]  # copy table name -> source relation it stands for
    tables: tuple[str, ...]  # nightly segments' tables, read whole as their last build left them
    # Where time alone can flip membership (see streaming/time_boundaries.py), and how often
    # the segment asked to be evaluated for everyone, for what no boundary follows.
    boundaries: tuple[tuple[Boundary, ...], ...]
    reevaluate_every: timedelta | None = None


def scoped_query(catalog: Catalog, segment: Segment) -> ScopedQuery:
    """Rewrite the segment so every source it reads, directly or through views, is a copy.

    The caller makes each copy read the source's rows for the customers in scope (the
    consumer's ScopeEngine holds only those, and makes each copy a view on them).
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
    tables: dict[str, None] = {}
    scoped = _scope_tree(tree, _nodes_by_relation(catalog), sources, tables)
    timing = time_dependence(scoped)
    every = _reevaluate_every(segment)
    if timing.unbounded and every is None:
        raise SegmentContractError(
            f"segment {segment.name!r} ({segment.original_file}) cannot be real-time: "
            f"{'; '.join(timing.unbounded)}. Compare columns with segops_now() shifted by a "
            "fixed interval, declare meta.segment.reevaluate_every (for example '5 minutes') "
            "to re-evaluate it for everyone that often, or make it nightly"
        )
    return ScopedQuery(
        segment=segment.name,
        sql=scoped.sql(dialect=DIALECT),
        sources=sources,
        tables=tuple(tables),
        boundaries=timing.boundaries,
        reevaluate_every=every,
    )


def _reevaluate_every(segment: Segment) -> timedelta | None:
    if segment.reevaluate_every is None:
        return None
    every = interval(str(segment.reevaluate_every))
    if every is None or every <= timedelta(0):
        raise SegmentContractError(
            f"segment {segment.name!r} ({segment.original_file}): "
            f"meta.segment.reevaluate_every is {segment.reevaluate_every!r}, not a positive "
            "interval such as '5 minutes'"
        )
    return every


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
    tree: exp.Expression, by_relation: dict[tuple[str, str], Model], sources: dict[str, str],
    tables: dict[str, None],
) -> exp.Expression:
    """Sources become copies (named in `sources`), views are inlined, and any other model (a
    nightly segment's table) is read where it is (named in `tables`)."""

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
                                sources, tables)
            return exp.Subquery(this=inner, alias=alias)
        tables[model.relation] = None
        node.set("catalog", None)
        return node

    return tree.transform(replace)
