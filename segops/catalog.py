"""The segment catalog: every model under models/segments/, read from the dbt manifest.

The manifest is the single source of truth for a segment's SQL and settings; neither path keeps
a second definition.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from segops.errors import SegOpsError
from segops.files import file_version
from segops.sql import misread_json_arrows, quote

REFRESH_MODES = ("realtime", "nightly")
LIVE_MATERIALIZATIONS = ("view", "ephemeral")
# one part of a dotted relation name: "a quoted one" (with "" for a quote) or a bare one
IDENTIFIER = re.compile(r'"((?:[^"]|"")*)"|([^."]+)')


class ManifestMissing(SegOpsError):
    """No dbt manifest yet: run `dbt parse` (or `make demo`) first."""


class UnknownSegment(SegOpsError):
    """No segment by that name; the message suggests the nearest."""


class ManifestUnreadable(SegOpsError):
    """The manifest is not JSON: caught while dbt rewrites it (dbt does not write atomically),
    or damaged."""


@dataclass(frozen=True)
class Segment:
    name: str
    unique_id: str
    relation: str
    refresh: str | None
    window: str | None
    reevaluate_every: str | None  # a real-time segment's periodic full re-evaluation, if any
    description: str
    materialized: str
    compiled_sql: str | None
    original_file: str
    problems: tuple[str, ...] = field(default=())

    @property
    def is_realtime(self) -> bool:
        return self.refresh == "realtime" and not self.problems


@dataclass(frozen=True)
class Model:
    """Any manifest node a segment can read from: model, seed, snapshot or source."""

    unique_id: str
    resource_type: str
    relation: str | None
    materialized: str | None
    compiled_sql: str | None
    depends_on: tuple[str, ...]


# manifest path -> (the file's version, its catalog)
_LOADED: dict[Path, tuple[tuple[int, int], Catalog]] = {}


class Catalog:
    """The dbt manifest as SegOps reads it: segments, the models they read, and their SQL."""

    def __init__(self, manifest: dict[str, Any]):
        self.manifest = manifest

    @classmethod
    def load(cls, manifest_path: Path) -> Catalog:
        """The catalog of the manifest at `manifest_path`; one version of the file is read and
        parsed once per process (preview reads it to find the target and to lay out what the
        target reads)."""
        version = file_version(manifest_path)
        loaded = _LOADED.get(manifest_path)
        if version is not None and loaded is not None and loaded[0] == version:
            return loaded[1]
        catalog = cls._read(manifest_path)
        _LOADED[manifest_path] = (version, catalog)
        return catalog

    @classmethod
    def _read(cls, manifest_path: Path) -> Catalog:
        try:
            raw = manifest_path.read_bytes()
        except FileNotFoundError:
            raise ManifestMissing(
                f"no dbt manifest at {manifest_path}; build it with `dbt parse` or `make demo`"
            ) from None
        try:
            return cls(json.loads(raw))
        except ValueError as error:
            raise ManifestUnreadable(
                f"the dbt manifest at {manifest_path} is not valid JSON ({error}): a dbt "
                "command may be writing it; otherwise rebuild it with `dbt parse`"
            ) from None

    @cached_property
    def nodes(self) -> dict[str, Model]:
        """Every model and source by unique_id."""
        nodes = {}
        for unique_id, node in {**self.manifest["nodes"], **self.manifest["sources"]}.items():
            if node["resource_type"] not in ("model", "seed", "snapshot", "source"):
                continue
            nodes[unique_id] = Model(
                unique_id=unique_id,
                resource_type=node["resource_type"],
                relation=local_relation(node.get("relation_name")),
                materialized=node.get("config", {}).get("materialized"),
                compiled_sql=node.get("compiled_code"),
                depends_on=tuple(node.get("depends_on", {}).get("nodes", ())),
            )
        return nodes

    @cached_property
    def segments(self) -> dict[str, Segment]:
        found = {}
        for unique_id, node in self.manifest["nodes"].items():
            if not _is_segment(node):
                continue
            meta = node.get("config", {}).get("meta", {}).get("segment") or {}
            segment = Segment(
                name=node["name"],
                unique_id=unique_id,
                relation=local_relation(node["relation_name"]),
                refresh=meta.get("refresh"),
                window=meta.get("window"),
                reevaluate_every=meta.get("reevaluate_every"),
                description=meta.get("description") or node.get("description", ""),
                materialized=node["config"]["materialized"],
                compiled_sql=node.get("compiled_code"),
                original_file=node["original_file_path"],
            )
            found[segment.name] = _with_problems(segment, self)
        return dict(sorted(found.items()))

    def segment(self, name: str) -> Segment:
        """The segment called `name`, or an error that names the nearest one."""
        if name not in self.segments:
            known = list(self.segments)
            nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
            raise UnknownSegment(f"no segment named {name!r}{hint} (segments: {', '.join(known)})")
        return self.segments[name]

    def realtime_segments(self) -> list[Segment]:
        return [s for s in self.segments.values() if s.is_realtime]

    def upstream(self, unique_id: str, *, through_nightly: bool = True) -> list[Model]:
        """Every model and source `unique_id` reads from, transitively; without
        `through_nightly`, a nightly segment is listed but what it reads is not (it is read as
        its last nightly build left it)."""
        stop = set() if through_nightly else self.nightly_segment_ids
        seen: dict[str, Model] = {}
        stack = list(self.nodes[unique_id].depends_on)
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id not in self.nodes:
                continue
            seen[node_id] = self.nodes[node_id]
            if node_id not in stop:
                stack.extend(self.nodes[node_id].depends_on)
        return list(seen.values())

    @cached_property
    def nightly_segment_ids(self) -> frozenset[str]:
        return frozenset(
            unique_id for unique_id, node in self.manifest["nodes"].items()
            if _is_segment(node)
            and (node.get("config", {}).get("meta", {}).get("segment") or {}).get("refresh")
            == "nightly"
        )

    def realtime_readers(self, segment: Segment) -> list[str]:
        """The real-time segments that read `segment`, a nightly segment, as its table."""
        if segment.refresh != "nightly":
            return []
        return [
            reader.name for reader in self.realtime_segments()
            if segment.unique_id in {m.unique_id for m in self.upstream(
                reader.unique_id, through_nightly=False)}
        ]


def _is_segment(node: dict[str, Any]) -> bool:
    return node["resource_type"] == "model" and "segments" in node["fqn"][1:-1]


def local_relation(relation_name: str | None) -> str | None:
    """`"schema"."name"` without the database, which is the warehouse file's name: the
    manifest may have been compiled against a file of another name."""
    if relation_name is None:
        return None
    schema, name = relation_parts(relation_name)
    return f"{quote(schema)}.{quote(name)}"


def relation_parts(relation_name: str) -> tuple[str, str]:
    """The schema and the name of a relation as dbt renders it: up to three identifiers joined
    by dots, each quoted or not."""
    *_, schema, name = [quoted.replace('""', '"') if quoted else bare
                        for quoted, bare in IDENTIFIER.findall(relation_name)]
    return schema, name


def _with_problems(segment: Segment, catalog: Catalog) -> Segment:
    """Attach every way `segment` breaks the segment contract, as messages naming the model."""
    problems = []
    where = f"segment {segment.name!r} ({segment.original_file})"
    if segment.refresh not in REFRESH_MODES:
        problems.append(
            f"{where}: meta.segment.refresh is {segment.refresh!r}; "
            f"expected one of {', '.join(REFRESH_MODES)}"
        )
    problems += [f"{where}: {misread}"
                 for misread in misread_json_arrows(segment.compiled_sql or "")]
    if segment.refresh == "realtime":
        if segment.materialized not in LIVE_MATERIALIZATIONS:
            problems.append(
                f"{where}: a real-time segment must be materialized as a view, "
                f"not {segment.materialized!r}, so it always reads live events"
            )
        for model in catalog.upstream(segment.unique_id, through_nightly=False):
            if model.unique_id in catalog.nightly_segment_ids:
                continue  # read as the last nightly build left it; the stream follows rebuilds
            if model.resource_type == "model" and model.materialized not in LIVE_MATERIALIZATIONS:
                problems.append(
                    f"{where}: reads {model.unique_id}, materialized as {model.materialized!r}; "
                    "a real-time segment may only read sources, views, ephemeral models and "
                    "other segments"
                )
    return Segment(**{**segment.__dict__, "problems": tuple(problems)})
