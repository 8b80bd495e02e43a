"""Resources from environment variables, with embedded defaults."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import duckdb
from dagster_dbt import DbtCliResource, DbtProject
from dagster_duckdb import DuckDBResource
from dbt.version import __version__ as dbt_version
from packaging.version import Version

from segops import warehouse
from segops.settings import Settings

# The dbt installed beside this Python: the dbt-core imported here, activated venv or not.
DBT_BESIDE_PYTHON = Path(sys.executable).with_name("dbt")


class WarehouseResource(DuckDBResource):
    """DuckDB resource that shares the lock etiquette of every other SegOps process."""

    timeout_seconds: float = 600.0

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.database, timeout=self.timeout_seconds) as con:
            yield con


class DbtResource(DbtCliResource):
    """dagster-dbt's CLI resource, told dbt's version instead of asking `dbt --version`.

    dagster-dbt starts `dbt --version` once per run to learn it, a Python start plus dbt's
    imports: 3 s of every nightly run on two cores. The executable is DBT_BESIDE_PYTHON when it
    exists, so its version is the one imported here.
    """

    @cached_property
    def _cli_version(self) -> Version:
        return Version(dbt_version)


def build_dbt_project(settings: Settings) -> DbtProject:
    # dbt's profile reads the warehouse path from the environment, and `prepare_if_dev` (under
    # `dagster dev`) runs the `dbt` on PATH: the one beside this Python if none is.
    os.environ.setdefault("SEGOPS_WAREHOUSE", str(settings.warehouse))
    if shutil.which("dbt") is None:
        os.environ["PATH"] = f"{DBT_BESIDE_PYTHON.parent}{os.pathsep}{os.environ['PATH']}"
    project = DbtProject(project_dir=settings.dbt_project_dir, target_path=settings.dbt_target_dir)
    project.prepare_if_dev()
    return project


def build_resources(settings: Settings, project: DbtProject) -> dict[str, object]:
    return {
        "dbt": DbtResource(
            project_dir=project,
            profiles_dir=str(settings.dbt_project_dir),
            dbt_executable=str(DBT_BESIDE_PYTHON) if DBT_BESIDE_PYTHON.exists() else "dbt",
        ),
        "warehouse": WarehouseResource(database=str(settings.warehouse)),
    }
