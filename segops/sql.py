"""SQL text built safely: identifiers come from the manifest (quoted), never from events."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import cache

import duckdb

DIALECT = "duckdb"  # sqlglot's name for DuckDB's SQL, for the modules that rewrite with it
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
    in-memory compile profile, another file name) then runs on the warehouse at hand. DuckDB's
    own parser does it (the query's syntax tree as JSON, and back): a command that previews
    has DuckDB loaded already, where importing a SQL library of its own took a fifth of its
    second. SQL that does not parse is returned as it is, for running it to say why."""
    tree = _syntax_tree(sql)
    if tree.get("error"):
        return sql
    for table in _nodes(tree, lambda node: node.get("type") == "BASE_TABLE"):
        table["catalog_name"] = ""
    with _parser().cursor() as con:
        (rewritten,) = con.execute(
            f"select json_deserialize_sql({literal(json.dumps(tree))})").fetchone()
    return rewritten


def tables_read(sql: str) -> set[tuple[str, str]]:
    """(schema, name), in lower case, of every table `sql` names with its schema."""
    return {(table["schema_name"].lower(), table["table_name"].lower())
            for table in _nodes(_syntax_tree(sql), lambda node: node.get("type") == "BASE_TABLE")
            if table.get("schema_name")}


def misread_json_arrows(sql: str) -> list[str]:
    """Each JSON arrow that DuckDB 1.5 reads other than as written, with what to write instead.

    DuckDB 1.5 binds `->` and `->>` more loosely than `and`, `or` and `not`: `where a = 1 and
    properties ->> 'plan' = 'pro'` is read as `((a = 1 and properties) ->> 'plan') = 'pro'`,
    which fails on the data ("Failed to cast value to numerical") or, worse, selects nothing.
    DuckDB's own parser finds them: an arrow whose operand is a condition.
    """
    tree = _syntax_tree(sql)
    if tree.get("error"):
        return []  # not a query this check reads; running it says what is wrong
    lines = sql.splitlines()
    found = []
    for arrow in _nodes(tree, lambda node: node.get("class") == "FUNCTION"
                        and node.get("function_name") in JSON_ARROWS):
        if any(child.get("class") in BOOLEAN_NODES for child in arrow.get("children", [])):
            line = sql.count("\n", 0, arrow["query_location"])
            found.append(
                f"`{lines[line].strip()}`: DuckDB reads `{arrow['function_name']}` more loosely "
                "than `and`, `or` and `not`, so this JSON lookup takes the condition before it as "
                f"its input; put it in parentheses: `(properties {arrow['function_name']} "
                "'key') = 'value'`"
            )
    return found


def _syntax_tree(sql: str) -> dict:
    """DuckDB's syntax tree of `sql`, as JSON (with `error` set when it does not parse)."""
    with _parser().cursor() as con:  # a cursor each: preview parses on two threads at once
        (tree,) = con.execute(f"select json_serialize_sql({literal(sql)})").fetchone()
    return json.loads(tree)


def _nodes(node: object, wanted: Callable[[dict], bool]) -> Iterator[dict]:
    """Every node of a syntax tree (from `_syntax_tree`) that is `wanted`."""
    if isinstance(node, dict):
        if wanted(node):
            yield node
        for value in node.values():
            yield from _nodes(value, wanted)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value, wanted)


@cache
def _parser() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()
