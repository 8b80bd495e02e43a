"""Rewrite a segment's compiled SQL to evaluate only a given set of customers.

The real-time path evaluates a segment for the customers a micro-batch touched, so its cost
follows the batch, not the history. Every source the segment reads (directly or through views)
is replaced by the same source filtered to the customers listed in a scope table; upstream
views are inlined so the filter reaches the base tables. Since a real-time segment depends only
on each customer's own rows, the scoped result equals the full result restricted to the scope.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from segops.catalog import Catalog, Model, Segment
from segops.membership import SegmentContractError

DIALECT = "duckdb"


def scoped_sql(catalog: Catalog, segment: Segment, scope_table: str) -> str:
    """The segment's SQL with every source filtered to `customer_id in scope_table`."""
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
    by_relation = _nodes_by_relation(catalog)
    return _scope_tree(tree, by_relation, scope_table).sql(dialect=DIALECT)


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


def _relation_key(relation: str) -> tuple[str, str, str]:
    table = exp.to_table(relation, dialect=DIALECT)
    return (table.catalog.lower(), table.db.lower(), table.name.lower())


def _nodes_by_relation(catalog: Catalog) -> dict[tuple[str, str, str], Model]:
    return {_relation_key(m.relation): m for m in catalog.nodes.values() if m.relation}


def _scope_tree(
    tree: exp.Expression, by_relation: dict[tuple[str, str, str], Model], scope_table: str
) -> exp.Expression:
    def replace(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Table) or not node.db:
            return node
        model = by_relation.get((node.catalog.lower(), node.db.lower(), node.name.lower()))
        if model is None:
            return node
        alias = node.alias or node.name
        if model.resource_type == "source":
            base = exp.Table(
                this=node.this, db=node.args.get("db"), catalog=node.args.get("catalog")
            )
            inner = (
                exp.select("*")
                .from_(base)
                .where(f"customer_id in (select customer_id from {scope_table})")
            )
        elif model.materialized == "view" and model.compiled_sql:
            inner = _scope_tree(
                sqlglot.parse_one(model.compiled_sql, read=DIALECT), by_relation, scope_table
            )
        else:
            return node
        return exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(alias)))

    return tree.transform(replace)
