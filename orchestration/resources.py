"""Resources from environment variables, with embedded defaults."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

import dagster as dg
import duckdb
from dagster_dbt import DbtProject
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from orchestration.nightly.dbt_runner import DbtResource
from segops.lake import ALIAS, dbt_environment, lake_connection, run_database
from segops.live_state import read_live_state
from segops.settings import Settings


class WarehouseResource(DuckDBResource):
    """The warehouse the models are built in: an in-memory DuckDB whose default catalog is the
    DuckLake cataloged in the live state's PostgreSQL (segops.lake), which any number of
    processes share; and the live tables in that PostgreSQL.

    A run attaches the lake once, when a step first asks for it, and each step gets a
    connection of its own to it (its own session and transaction, at the lake's latest
    snapshot): loading the extensions and attaching take about 0.15 s, which each of the
    nightly's membership steps used to pay. The database is the lake's `run_database`, which
    the dbt profile opens too, so the run's dbt build, in this process, shares it rather than
    attaching the lake again."""

    database: str = ":memory:"
    postgres_dsn: str | None = None
    lake_data_path: str = ""
    _opened: ExitStack | None = PrivateAttr(default=None)
    _lake: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._lake is None:
            self._opened = ExitStack()
            self._lake = self._opened.enter_context(
                lake_connection(self.postgres_dsn, self.lake_data_path,
                                database=run_database(self.postgres_dsn,
                                                      self.lake_data_path)))
        with self._lake.cursor() as con:
            con.execute(f"use {ALIAS}")
            yield con

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = self._lake = None

    def read_live_state(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """Read-only DuckDB on the live tables in PostgreSQL (segops.live_state)."""
        return read_live_state(self.postgres_dsn)


def build_dbt_project(settings: Settings) -> DbtProject:
    """The dbt project as its manifest describes it. The manifest is built before anything
    starts (`make manifest`, or `segops nightly` parsing first) and never rewritten while the
    code location loads: the streaming consumer reads the same file."""
    # dbt's profile reads the lake from the environment (without a PostgreSQL the definitions
    # still load, and a run says what is missing).
    if settings.postgres_dsn:
        os.environ.update(dbt_environment(settings))
    return DbtProject(project_dir=settings.dbt_project_dir, target_path=settings.dbt_target_dir)


def build_resources(settings: Settings, project: DbtProject) -> dict[str, object]:
    return {
        "dbt": DbtResource(
            project_dir=str(project.project_dir),
            profiles_dir=str(settings.dbt_project_dir),
            target_dir=str(settings.dbt_target_dir),
        ),
        "warehouse": warehouse_resource(settings),
    }


def warehouse_resource(settings: Settings) -> WarehouseResource:
    return WarehouseResource(postgres_dsn=settings.postgres_dsn,
                             lake_data_path=settings.lake_data_path)
