"""SQL text built safely: identifiers come from the manifest (quoted), never from events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache

import duckdb

DIALECT = "duckdb"
JSON_ARROWS = frozenset({"->", "->>"})
# What `and`, `or`, `not`, comparisons, `is null` and `in` parse to in DuckDB's syntax tree
BOOLEAN_NODES = frozenset({"CONJUNCTION", "COMPARISON", "OPERATOR"})


def quote(identifier: str) -> str:
    """Quote an identifier for DuckDB; identifiers come from the manifest, never from events."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A string as a SQL literal. The commands an analyst waits for (preview, diff) inline
    their values rather than bind them: DuckDB 1.5's Python binding imports pandas, numpy and
    pyarrow on a process's first bound parameter, half a second of a one-second answer."""
    return "'" + text.replace("'", "''") + "'"


def without_database(sql: str) -> str:
    """Drop the database part of every table reference: SQL compiled against one target (an
    in-memory compile profile, another file name) then runs on the warehouse at hand. sqlglot
    is imported here, not with the module: a tenth of a second a command that only reads does
    not pay before it starts its engine (segops.live_reach.open_soon)."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read=DIALECT)
    for table in tree.find_all(exp.Table):
        table.set("catalog", None)
    return tree.sql(dialect=DIALECT)


def misread_json_arrows(sql: str) -> list[str]:
    """Each JSON arrow that DuckDB 1.5 reads other than as written, with what to write instead.

    DuckDB 1.5 binds `->` and `->>` more loosely than `and`, `or` and `not`: `where a = 1 and
    properties ->> 'plan' = 'pro'` is read as `((a = 1 and properties) ->> 'plan') = 'pro'`,
    which fails on the data ("Failed to cast value to numerical") or, worse, selects nothing.
    DuckDB's own parser finds them: an arrow whose operand is a condition.
    """
    (tree,) = _parser().execute(f"select json_serialize_sql({literal(sql)})").fetchone()
    tree = json.loads(tree)
    if tree.get("error"):
        return []  # not a query this check reads; running it says what is wrong
    lines = sql.splitlines()
    found = []
    for arrow in _arrows(tree):
        if any(child.get("class") in BOOLEAN_NODES for child in arrow.get("children", [])):
            line = sql.count("\n", 0, arrow["query_location"])
            found.append(
                f"`{lines[line].strip()}`: DuckDB reads `{arrow['function_name']}` more loosely "
                "than `and`, `or` and `not`, so this JSON lookup takes the condition before it as "
                f"its input; put it in parentheses: `(properties {arrow['function_name']} "
                "'key') = 'value'`"
            )
    return found


def _arrows(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        if node.get("class") == "FUNCTION" and node.get("function_name") in JSON_ARROWS:
            yield node
        for value in node.values():
            yield from _arrows(value)
    elif isinstance(node, list):
        for value in node:
            yield from _arrows(value)


@cache
def _parser() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()
