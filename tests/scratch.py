"""The dbt models built by real dbt into a throwaway DuckDB file (the profile's `scratch`
target), for tests of the segments' SQL itself, apart from any store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from segops.dbt import run_dbt
from segops.schema import ensure_schema
from segops.settings import Settings, load_settings

SCRATCH_TARGET = ["--target", "scratch"]


@dataclass(frozen=True)
class Scratch:
    settings: Settings
    database: Path

    @property
    def manifest_path(self) -> Path:
        return self.settings.manifest_path

    @property
    def dbt_target_dir(self) -> Path:
        return self.settings.dbt_target_dir

    def connect(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.database))

    def dbt(self, command: list[str], **options: Any):
        """`dbt <command>` on this file."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SEGOPS_SCRATCH_DATABASE", str(self.database))
            return run_dbt(self.settings, command, extra=SCRATCH_TARGET, **options)


def scratch_build(root: Path, fill: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
                  **options: Any) -> Scratch:
    """Raw tables in a new file under `root`, filled by `fill`, and every model built there."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGOPS_DBT_TARGET_DIR", str(root / "target"))
        scratch = Scratch(load_settings(), root / "scratch.duckdb")
    with scratch.connect() as con:
        ensure_schema(con)
        if fill:
            fill(con)
    scratch.dbt(["build"], **options)
    return scratch
