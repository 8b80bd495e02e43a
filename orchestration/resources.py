"""Resources from environment variables, with embedded defaults."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster_dbt import DbtProject
from dagster_duckdb import DuckDBResource

from orchestration.nightly.dbt_runner import DbtResource
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
            project_dir=str(project.project_dir),
            profiles_dir=str(settings.dbt_project_dir),
            target_dir=str(settings.dbt_target_dir),
        ),
        "warehouse": WarehouseResource(database=str(settings.warehouse)),
    }
