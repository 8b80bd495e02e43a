"""Compiled SQL kept by what it was compiled from, so a repeated preview or diff skips dbt.

Compiling through dbt costs seconds (its imports, then parsing the project); evaluating a
segment costs a fraction of one. The key is the SQL itself and every project file that could
change what it compiles to (macros, models, YAML, profiles, dbt's version), apart from the
segment's own file: so while an analyst edits a segment, its base version stays compiled and
only the edited version goes through dbt again.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

import yaml

from segops.settings import Settings

# Newest entries kept; an entry is one segment's compiled SQL, a few kilobytes.
ENTRIES_KEPT = 500
PROJECT_FILES = ("*.sql", "*.yml", "*.yaml")
# dbt's source folders and their defaults; dbt writes its own output elsewhere (target, logs).
SOURCE_PATHS = {"model-paths": ["models"], "macro-paths": ["macros"], "test-paths": ["tests"],
                "seed-paths": ["seeds"], "snapshot-paths": ["snapshots"],
                "analysis-paths": ["analyses"]}


class CompiledCache:
    def __init__(self, settings: Settings, own_file: Path | None = None):
        self.folder = settings.dbt_target_dir / "preview" / "compiled"
        self._project = _project_fingerprint(settings, own_file)

    def get(self, sql: str) -> str | None:
        path = self._path(sql)
        try:
            compiled = path.read_text()
        except FileNotFoundError:
            return None
        path.touch()  # recently used: kept longest
        return compiled

    def put(self, sql: str, compiled: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(sql)
        partial = path.with_suffix(".partial")
        partial.write_text(compiled)
        partial.replace(path)  # a reader never sees half an entry
        entries = sorted(self.folder.glob("*.sql"), key=lambda p: p.stat().st_mtime,
                         reverse=True)
        for stale in entries[ENTRIES_KEPT:]:
            stale.unlink(missing_ok=True)

    def _path(self, sql: str) -> Path:
        key = hashlib.sha256(f"{self._project}\0{sql}".encode()).hexdigest()
        return self.folder / f"{key[:32]}.sql"


def _project_fingerprint(settings: Settings, own_file: Path | None) -> str:
    """A hash of what a compilation reads: dbt's version, the project's top-level files and the
    folders its `*-paths` name, except `own_file`."""
    project = settings.dbt_project_dir
    config = yaml.safe_load((project / "dbt_project.yml").read_text()) or {}
    folders = [folder for key, default in SOURCE_PATHS.items()
               for folder in config.get(key, default)]
    skip = own_file.resolve() if own_file is not None else None
    files = sorted(
        path
        for pattern in PROJECT_FILES
        for path in [*project.glob(pattern),
                     *(found for folder in folders for found in (project / folder).rglob(pattern))]
        if path.is_file() and path.resolve() != skip
    )
    digest = hashlib.sha256(version("dbt-core").encode())
    for path in files:
        digest.update(str(path.relative_to(project)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
