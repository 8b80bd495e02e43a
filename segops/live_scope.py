"""A batch's customers' rows, read from PostgreSQL into an in-memory DuckDB that has the
warehouse's raw tables, so the compiled segment SQL and the trait rules run there unchanged.

The rows are read through the batch's own transaction: they include what it just stored, and
its customer locks keep anyone else from changing them until it commits. A model table a
segment reads (a nightly segment's) is read from the lake, through a view under its own name.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import duckdb
import psycopg
import pyarrow as pa
from pyarrow import csv

from segops.customers import TraitChange, apply_trait_changes
from segops.lake import ALIAS, attach_lake
from segops.schema import ensure_schema

SCOPED_TABLES = ("raw.events", "raw.customers", "raw.customer_traits")
# DuckDB types of the raw tables' columns, and how each travels from PostgreSQL.
_ARROW_TYPES = {"VARCHAR": pa.string(), "JSON": pa.string(), "TIMESTAMP": pa.timestamp("us")}


class ScopeEngine:
    """One consumer's DuckDB for its batches: emptied and filled again for each one."""

    def __init__(self, threads: int = 1, memory_limit: str = "256MB",
                 lake: tuple[str, str] | None = None):
        """`lake`: the PostgreSQL DSN and data path of the lake the models are in, if any."""
        self.con = duckdb.connect(config={"threads": threads, "memory_limit": memory_limit})
        ensure_schema(self.con)
        self.lake = lake
        self._lake_attached = False
        self._from_lake: set[str] = set()
        self._scoped: dict[str, str] = {}
        self.columns = {table: [(name, kind) for name, kind, *_ in
                                self.con.execute(f"describe {table}").fetchall()]
                        for table in SCOPED_TABLES}

    def load(self, pg: psycopg.Connection, customers: Iterable[str],
             tables: Iterable[str] = SCOPED_TABLES) -> None:
        """Replace the raw tables' rows by the customers' rows in PostgreSQL, every event of
        their history (see bench/README.md on B7h); only `tables`, the rest emptied."""
        scope = sorted(set(customers))
        wanted = set(tables)
        for table in SCOPED_TABLES:
            self.con.execute(f"delete from {table}")
            if table not in wanted:
                continue
            # One index probe per customer whatever plan PostgreSQL caches for the statement:
            # `customer_id = any(%s)`, once psycopg prepares it, gets a generic plan whose
            # bitmap scan turns lossy past some 10,000 customers and then rechecks every row
            # of its pages against the whole array, element by element (minutes at 10M events).
            self._copy(pg, table, "customer_id in (select unnest(%s::text[]))", [scope])

    def scope_as(self, copy: str, relation: str) -> None:
        """Make `copy`, the name a scoped segment reads `relation` under, a view on it: the
        tables here hold the batch's customers' rows already, so a copy of them per segment
        and batch would cost a fifth of a small batch's evaluation for nothing."""
        if self._scoped.get(copy) != relation:
            self.con.execute(f"create or replace temp view {copy} as select * from {relation}")
            self._scoped[copy] = relation

    def from_lake(self, relations: Iterable[str]) -> list[str]:
        """Make these model tables readable here under their own names, as views on the lake
        (each query reads its latest snapshot, so a nightly rebuild shows at once); the ones
        the lake does not hold (yet)."""
        missing = []
        for relation in relations:
            if relation in self._from_lake:
                continue
            if self.lake is None:
                missing.append(relation)
                continue
            if not self._lake_attached:
                attach_lake(self.con, *self.lake, read_only=True)
                self._lake_attached = True
            schema, table = relation.replace('"', "").split(".")
            try:
                self.con.execute(f"create schema if not exists memory.{schema}")
                self.con.execute(f"create view memory.{schema}.{table} as "
                                 f"select * from {ALIAS}.{schema}.{table}")
            except duckdb.CatalogException:
                missing.append(relation)
                continue
            self._from_lake.add(relation)
        return missing

    def reattach(self) -> None:
        """Attach the lake again, when attached, once PostgreSQL is back: its catalog was read
        over connections to the server that went away. DuckDB's postgres extension reconnects
        those by itself; a fresh attachment does not rely on that. The views on it name it, so
        they read the new attachment."""
        if not self._lake_attached:
            return
        self.con.execute(f"detach {ALIAS}")
        self._lake_attached = False
        attach_lake(self.con, *self.lake, read_only=True)
        self._lake_attached = True

    def _copy(self, pg: psycopg.Connection, table: str, where: str, params: list) -> None:
        """The rows of `table` that `where` selects, from PostgreSQL as CSV by COPY, parsed by
        Arrow: no Python object per value (as tuples, converting them took a third of a
        consumer's CPU at 1M customers)."""
        columns = self.columns[table]
        selected = ", ".join(f"{name}::text" if kind == "JSON" else name
                             for name, kind in columns)
        text = io.BytesIO()
        with pg.cursor().copy(f"copy (select {selected} from {table} where {where}) "
                              "to stdout (format csv)", params) as copy:
            for data in copy:
                text.write(data)
        if not text.tell():
            return
        text.seek(0)
        names = [name for name, _ in columns]
        rows = csv.read_csv(
            text, read_options=csv.ReadOptions(column_names=names),
            parse_options=csv.ParseOptions(newlines_in_values=True),
            # PostgreSQL's CSV: NULL unquoted and empty, an empty string quoted
            convert_options=csv.ConvertOptions(
                column_types={name: _ARROW_TYPES[kind] for name, kind in columns},
                strings_can_be_null=True, quoted_strings_can_be_null=False))
        self.con.register("_rows", rows)
        # JSON as DuckDB writes it: PostgreSQL's jsonb prints '{"plan": "pro"}', and the trait
        # rules compare profiles as text, so an unchanged profile would count as changed.
        normalized = ", ".join(f"json({name}) as {name}" if kind == "JSON" else name
                               for name, kind in columns)
        try:
            self.con.execute(f"insert into {table} by name select {normalized} from _rows")
        finally:
            self.con.unregister("_rows")

    def apply_traits(self, pg: psycopg.Connection, changes: list[TraitChange]) -> list[str]:
        """Apply trait changes by the warehouse's rules here, then write what they recorded and
        the profiles they changed to PostgreSQL; the customers whose profile changed."""
        if not any(change.traits for change in changes):
            return []
        changed = apply_trait_changes(self.con, changes)
        traits = self.con.execute(
            "select customer_id, trait, set_at, value::varchar, source from raw.customer_traits "
            "where customer_id in (select customer_id from _traits_of)").fetchall()
        with pg.cursor() as cursor:
            cursor.executemany(
                "insert into raw.customer_traits (customer_id, trait, set_at, value, source) "
                "values (%s, %s, %s, %s::jsonb, %s) on conflict do nothing", traits)
            profiles = self.con.execute(
                "select customer_id, email, country, city, acquisition_channel, signed_up_at, "
                "traits::varchar from raw.customers where customer_id in (select unnest($ids))",
                {"ids": changed}).fetchall()
            cursor.executemany(
                """
                insert into raw.customers (customer_id, email, country, city,
                    acquisition_channel, signed_up_at, traits)
                values (%s, %s, %s, %s, %s, %s, %s::jsonb)
                on conflict (customer_id) do update set email = excluded.email,
                    country = excluded.country, city = excluded.city,
                    acquisition_channel = excluded.acquisition_channel,
                    signed_up_at = excluded.signed_up_at, traits = excluded.traits
                """, profiles)
        return changed
