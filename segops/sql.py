"""SQL text built safely: identifiers come from the manifest (quoted), never from events."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

DIALECT = "duckdb"


def quote(identifier: str) -> str:
    """Quote an identifier for DuckDB; identifiers come from the manifest, never from events."""
    return '"' + identifier.replace('"', '""') + '"'


def without_database(sql: str) -> str:
    """Drop the database part of every table reference: SQL compiled against one target (an
    in-memory compile profile, another file name) then runs on the warehouse at hand."""
    tree = sqlglot.parse_one(sql, read=DIALECT)
    for table in tree.find_all(exp.Table):
        table.set("catalog", None)
    return tree.sql(dialect=DIALECT)
