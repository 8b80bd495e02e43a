"""Preview a segment's live reach before it ships: compile through dbt, run read-only.

The target is an existing segment, a .sql file not yet in the project, or inline SQL; all may
use dbt Jinja (`ref`, `source`, `segops_now()`). Compilation uses an in-memory dbt target, so
it never touches the warehouse, and is kept for the next call; evaluation reads the warehouse
read-only, or with the live state in PostgreSQL the lake and PostgreSQL (segops.live_reach).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from segops.catalog import Catalog, Segment
from segops.clock import set_session_now
from segops.compiled_cache import CompiledCache
from segops.dbt import COMPILE_TARGET, DbtError, run_dbt
from segops.errors import SegOpsError
from segops.live_reach import read_segment_inputs
from segops.membership import members_query
from segops.settings import Settings
from segops.sql import literal, misread_json_arrows, without_database

if TYPE_CHECKING:
    from dbt.contracts.graph.manifest import Manifest

SAMPLE = 10


@dataclass(frozen=True)
class Target:
    name: str
    sql: str  # compiled, without database names
    segment: Segment | None  # the shipped segment, when previewing one


@dataclass
class PreviewResult:
    name: str
    evaluated_at: datetime
    reach: int
    customers: int
    sample: list[tuple[str, str | None]]  # (customer_id, attributes as JSON text)
    overlap: list[tuple[str, int]]
    enters: int | None = None
    exits: int | None = None
    enter_sample: list[str] = field(default_factory=list)
    exit_sample: list[str] = field(default_factory=list)
    seconds: float = 0.0
    members: frozenset[str] | None = None  # every member, when asked for (`--watch` diffs saves)

    @property
    def share(self) -> float:
        return self.reach / self.customers if self.customers else 0.0

    def to_dict(self) -> dict:
        return {
            "segment": self.name,
            "evaluated_at": self.evaluated_at.isoformat(sep=" "),
            "reach": self.reach,
            "customers": self.customers,
            "share": round(self.share, 6),
            "sample": [{"customer_id": customer_id, "attributes": attributes}
                       for customer_id, attributes in self.sample],
            "overlap": {name: count for name, count in self.overlap},
            "enters": self.enters,
            "exits": self.exits,
            "enter_sample": self.enter_sample,
            "exit_sample": self.exit_sample,
            "seconds": round(self.seconds, 3),
        }

    def to_markdown(self) -> str:
        """The same report as the CLI's, as markdown for the Dagster UI."""
        lines = [
            f"**{self.name}** at {self.evaluated_at:%Y-%m-%d %H:%M:%S} UTC: **{self.reach:,}** "
            f"customers, {self.share:.2%} of {self.customers:,}",
            "",
        ]
        if self.enters is not None:
            lines += [
                "| compared with current membership | customers | sample |",
                "|---|---:|---|",
                f"| would enter | {self.enters:,} | {', '.join(self.enter_sample)} |",
                f"| would exit | {self.exits:,} | {', '.join(self.exit_sample)} |",
                "",
            ]
        if self.overlap:
            lines += ["| overlaps with | shared members | of this reach |", "|---|---:|---:|"]
            lines += [
                f"| {name} | {shared:,} | {shared / self.reach:.1%} |"
                for name, shared in self.overlap
            ]
            lines.append("")
        if self.sample:
            lines += ["| sample member | attributes |", "|---|---|"]
            lines += [
                f"| {customer_id} | `{attributes or ''}` |"
                for customer_id, attributes in self.sample
            ]
        return "\n".join(lines)


def resolve_target(settings: Settings, target: str | None, sql: str | None) -> Target:
    """Compile what is to be previewed: inline SQL, a .sql file, or a segment's name."""
    if sql is not None:
        return Target("inline", compile_inline(settings, sql, where="inline SQL"), None)
    assert target is not None
    path = Path(target)
    if target.endswith(".sql") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"no such SQL file: {target}")
        return Target(path.stem, compile_inline(settings, path.read_text(), where=str(path),
                                                own_file=path), None)
    segment = Catalog.load(settings.manifest_path).segment(target)
    own_file = settings.dbt_project_dir / segment.original_file
    compiled = segment.compiled_sql or compile_inline(
        settings, own_file.read_text(), where=segment.original_file, own_file=own_file,
    )
    return Target(segment.name, without_database(compiled), segment)


def compile_inline(settings: Settings, sql: str, *, where: str, own_file: Path | None = None,
                   manifest: Manifest | None = None) -> str:
    """Compile dbt SQL with the in-memory target; dbt's error names `where` on failure. A
    compilation is kept (`CompiledCache`), so the same SQL in the same project compiles once;
    `own_file` is the file the SQL comes from, which the cache's key leaves out. With a
    `manifest` from `parse_project`, dbt does not parse the project again."""
    cache = CompiledCache(settings, own_file)
    compiled = cache.get(sql)
    if compiled is None:
        try:
            result = run_dbt(settings, ["compile", "--inline", sql],
                             extra=_compile_args(settings), manifest=manifest)
        except DbtError as error:
            raise DbtError(f"{where}: {error}") from None
        compiled = without_database(result.result.results[0].node.compiled_code)
        cache.put(sql, compiled)
    if misread := misread_json_arrows(compiled):
        raise SegOpsError(f"{where}: " + "; ".join(misread))
    return compiled


def parse_project(settings: Settings) -> Manifest:
    """The project parsed once, for a process that compiles again and again (`--watch`)."""
    return run_dbt(settings, ["parse"], extra=_compile_args(settings)).result


def _compile_args(settings: Settings) -> list[str]:
    return [*COMPILE_TARGET, "--target-path", str(settings.dbt_target_dir / "preview")]


def run_preview(settings: Settings, target: Target, at: datetime, *,
                keep_members: bool = False,
                opening: Future[duckdb.DuckDBPyConnection] | None = None) -> PreviewResult:
    """Evaluate the target read-only at `at`: reach, sample, overlaps and, for a shipped
    segment, who would enter and exit compared with its current membership. `opening` is
    `live_reach.open_soon`'s, when the command started it."""
    started = time.monotonic()
    with read_segment_inputs(settings, (target.sql,), opening=opening) as con, \
            ThreadPoolExecutor(max_workers=1) as pool:
        set_session_now(con, at)
        # Counted on a cursor of its own meanwhile: from PostgreSQL, a tenth of a second.
        customers = pool.submit(_count_customers, con.cursor())
        try:
            con.execute(
                f"create temp table _preview as "
                f"{members_query(con, target.name, f'({target.sql})')}"
            )
        except duckdb.Error as error:
            raise SegOpsError(f"{target.name}: the SQL failed in the warehouse: {error}") from None
        result = _summarise(con, target, at, customers.result())
        if keep_members:
            result.members = frozenset(
                row[0] for row in con.execute("select customer_id from _preview").fetchall())
    result.seconds = time.monotonic() - started
    return result


def _count_customers(cursor: duckdb.DuckDBPyConnection) -> int:
    with cursor:
        return cursor.execute("select count(*) from raw.customers").fetchone()[0]


def _summarise(con: duckdb.DuckDBPyConnection, target: Target, at: datetime,
               customers: int) -> PreviewResult:
    reach, distinct = con.execute(
        "select count(*), count(distinct customer_id) from _preview"
    ).fetchone()
    if reach != distinct:
        raise SegOpsError(
            f"{target.name}: {reach - distinct} duplicate customer_id rows "
            "(a segment has one row per member)"
        )
    sample = con.execute(
        f"select customer_id, attributes::varchar from _preview order by customer_id "
        f"limit {SAMPLE}"
    ).fetchall()
    overlap = con.execute(
        """
        select m.segment, count(*) from segops.segment_membership as m
        join _preview as p using (customer_id)
        group by m.segment order by count(*) desc, m.segment
        """
    ).fetchall()
    result = PreviewResult(target.name, at, reach, customers, sample, overlap)
    if target.segment is not None:
        diff = con.execute(
            f"""
            with current as (
                select customer_id from segops.segment_membership
                where segment = {literal(target.name)}
            ),
            enters as (select customer_id from _preview except select customer_id from current),
            exits as (select customer_id from current except select customer_id from _preview)
            select (select count(*) from enters), (select count(*) from exits),
                   (select coalesce(list(customer_id order by customer_id)[:5], [])
                    from enters),
                   (select coalesce(list(customer_id order by customer_id)[:5], [])
                    from exits)
            """
        ).fetchone()
        result.enters, result.exits, result.enter_sample, result.exit_sample = diff
    return result
