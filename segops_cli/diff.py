"""`segops diff`: what a change to the segments does to real people, before it merges.

Every segment whose SQL or YAML differs between a Git ref and the working tree is compiled in
both versions and evaluated read-only against the warehouse at the same "now": reach before
and after, who would enter and who would exit (with their attributes), how its overlap with
the other segments moves, and a change of refresh mode, with a real-time refusal's reason.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import yaml

from segops.catalog import Catalog, Segment
from segops.clock import set_session_now
from segops.errors import SegOpsError
from segops.live_reach import read_segment_inputs
from segops.membership import SegmentContractError, members_query
from segops.preview import compile_inline
from segops.settings import Settings
from segops.sql import literal
from streaming.scoping import scoped_query

SAMPLE = 5


@dataclass
class Version:
    refresh: str | None = None
    reach: int = 0
    refused: str | None = None  # why it cannot be real-time, when it asks to be
    overlap: dict[str, int] = field(default_factory=dict)


@dataclass
class SegmentDiff:
    segment: str
    status: str  # added, changed, deleted
    before: Version | None
    after: Version | None
    enters: int = 0
    exits: int = 0
    enter_sample: list[dict] = field(default_factory=list)
    exit_sample: list[dict] = field(default_factory=list)


def changed_segments(settings: Settings, base: str) -> dict[str, str]:
    """Segment name -> added | changed | deleted, between `base` and the working tree."""
    folder = settings.dbt_project_dir / "models" / "segments"
    tracked = _git(folder, "diff", "--name-status", base, "--", ".").splitlines()
    untracked = _git(folder, "ls-files", "--others", "--exclude-standard", "--", ".").split()
    found: dict[str, str] = {}
    for line in [*tracked, *(f"A\t{name}" for name in untracked)]:
        code, path = line.split("\t")[0], Path(line.split("\t")[-1])
        if path.suffix not in (".sql", ".yml") or path.name.startswith("_"):
            continue
        status = {"A": "added", "D": "deleted"}.get(code[0], "changed")
        found[path.stem] = status if found.get(path.stem, status) == status else "changed"
    return dict(sorted(found.items()))


def diff_segments(settings: Settings, base: str, at: datetime, *,
                  opening: Future[duckdb.DuckDBPyConnection] | None = None) -> list[SegmentDiff]:
    """Each changed segment's two versions, evaluated against the live inputs at `at`, all
    on one read of them (`opening` is `live_reach.open_soon`'s, when the command started it)."""
    folder = settings.dbt_project_dir / "models" / "segments"
    catalog = Catalog.load(settings.manifest_path)
    changed = {}
    for name, status in changed_segments(settings, base).items():
        versions = {}
        for label, ref, absent in (("before", base, "added"), ("after", None, "deleted")):
            source = None if status == absent else _source(folder, name, ref)
            if source is not None:
                sql, where, meta = source
                compiled = compile_inline(settings, sql, where=where,
                                          own_file=folder / f"{name}.sql")
                versions[label] = (compiled, where, meta)
        changed[name] = (status, versions)
    if not changed:
        if opening is not None:
            opening.result().close()
        return []
    reads = [sql for _, versions in changed.values() for sql, _, _ in versions.values()]
    with read_segment_inputs(settings, reads, opening=opening) as con:
        set_session_now(con, at)
        # read once for every version's overlaps (from PostgreSQL, through the scanner)
        con.execute("create temp table _membership as "
                    "select segment, customer_id from segops.segment_membership")
        return [_evaluate(con, catalog, name, status, versions)
                for name, (status, versions) in changed.items()]


def _source(folder: Path, name: str, ref: str | None) -> tuple[str, str, dict] | None:
    """(SQL, where it comes from, its YAML's settings) of a segment at `ref` (None: the working
    tree)."""
    if ref is None:
        sql_path, yml_path = folder / f"{name}.sql", folder / f"{name}.yml"
        sql = sql_path.read_text() if sql_path.exists() else None
        yml = yml_path.read_text() if yml_path.exists() else ""
        where = str(sql_path)
    else:
        sql = _git(folder, "show", f"{ref}:./{name}.sql", check=False) or None
        yml = _git(folder, "show", f"{ref}:./{name}.yml", check=False)
        where = f"{ref}:models/segments/{name}.sql"
    if sql is None:
        return None
    return sql, where, _segment_meta(yml)


def _segment_meta(yml: str) -> dict:
    for model in (yaml.safe_load(yml) or {}).get("models", []):
        meta = (model.get("config") or {}).get("meta") or {}
        return {"segment": meta.get("segment") or {},
                "materialized": (model.get("config") or {}).get("materialized", "table")}
    return {"segment": {}, "materialized": "table"}


def _evaluate(con: duckdb.DuckDBPyConnection, catalog: Catalog, name: str, status: str,
              sources: dict[str, tuple[str, str, dict]]) -> SegmentDiff:
    """`sources`: label -> (compiled SQL, where it comes from, its YAML's settings)."""
    versions = {}
    for label, (compiled, where, meta) in sources.items():
        try:
            con.execute(f"create or replace temp table _{label} as "
                        f"{members_query(con, name, '(' + compiled + ')')}")
        except (duckdb.Error, SegmentContractError) as error:
            raise SegOpsError(f"{where}: the SQL failed in the warehouse: {error}") from None
        versions[label] = Version(
            refresh=meta["segment"].get("refresh"),
            reach=con.execute(f"select count(*) from _{label}").fetchone()[0],
            refused=_refusal(catalog, name, compiled, meta),
            overlap=dict(con.execute(
                f"select m.segment, count(*) from _membership as m "
                f"join _{label} using (customer_id) where m.segment <> {literal(name)} "
                "group by 1 order by 1").fetchall()),
        )
    for label in ("before", "after"):
        if label not in versions:
            con.execute(f"create or replace temp table _{label} "
                        "(segment varchar, customer_id varchar, attributes json)")
    diff = SegmentDiff(name, status, versions.get("before"), versions.get("after"))
    diff.enters, diff.enter_sample = _moved(con, "_after", "_before")
    diff.exits, diff.exit_sample = _moved(con, "_before", "_after")
    return diff


def _moved(con: duckdb.DuckDBPyConnection, into: str, out_of: str) -> tuple[int, list[dict]]:
    moved = f"from {into} where customer_id not in (select customer_id from {out_of})"
    (count,) = con.execute(f"select count(*) {moved}").fetchone()
    sample = con.execute(f"select customer_id, attributes::varchar {moved} "
                         f"order by customer_id limit {SAMPLE}").fetchall()
    return count, [{"customer_id": c, "attributes": json.loads(a) if a else None}
                   for c, a in sample]


def _refusal(catalog: Catalog, name: str, compiled: str, meta: dict) -> str | None:
    """Why this version cannot be real-time, when its YAML asks for it."""
    if meta["segment"].get("refresh") != "realtime":
        return None
    if meta["materialized"] not in ("view", "ephemeral"):
        return f"a real-time segment must be a view, not {meta['materialized']!r}"
    segment = Segment(name=name, unique_id=f"model.diff.{name}", relation=name,
                      refresh="realtime", window=None,
                      reevaluate_every=meta["segment"].get("reevaluate_every"),
                      description="", materialized=meta["materialized"], compiled_sql=compiled,
                      original_file=f"models/segments/{name}.sql")
    try:
        scoped_query(catalog, segment)
    except SegmentContractError as error:
        return str(error)
    return None


def _git(folder: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SegOpsError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout if done.returncode == 0 else ""


def merge_base(settings: Settings) -> str:
    return _git(settings.dbt_project_dir, "merge-base", "HEAD", "main").strip()


def as_json(diffs: list[SegmentDiff]) -> str:
    return json.dumps([asdict(d) for d in diffs], indent=1, default=str)


def as_markdown(diffs: list[SegmentDiff], at: datetime) -> str:
    lines = [f"### Segment changes, evaluated at {at:%Y-%m-%d %H:%M:%S} UTC", ""]
    if not diffs:
        return "\n".join([*lines, "No segment changed."])
    for d in diffs:
        before, after = d.before or Version(), d.after or Version()
        lines += [f"#### `{d.segment}` ({d.status})", "",
                  "| | before | after |", "|---|---:|---:|",
                  f"| refresh | {before.refresh or '—'} | {after.refresh or '—'} |",
                  f"| reach | {before.reach:,} | {after.reach:,} |",
                  f"| would enter | | {d.enters:,} |", f"| would exit | | {d.exits:,} |", ""]
        if before.refresh != after.refresh and d.before and d.after:
            lines += [f"**Refresh mode changes: {before.refresh} → {after.refresh}.**", ""]
        if after.refused:
            lines += [f"**Refused as real-time:** {after.refused}", ""]
        for title, sample in (("enter", d.enter_sample), ("exit", d.exit_sample)):
            if sample:
                lines += [f"Would {title}: " + ", ".join(
                    f"`{m['customer_id']}` {json.dumps(m['attributes'])}" for m in sample), ""]
        overlap = sorted(before.overlap.keys() | after.overlap.keys())
        if overlap:
            lines += ["| overlap with | before | after |", "|---|---:|---:|"]
            lines += [f"| {o} | {before.overlap.get(o, 0):,} | {after.overlap.get(o, 0):,} |"
                      for o in overlap]
            lines.append("")
    return "\n".join(lines)
