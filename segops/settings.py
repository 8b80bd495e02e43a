"""Settings from environment variables, with embedded defaults that work on a fresh clone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


@dataclass(frozen=True)
class Settings:
    warehouse: Path
    dbt_project_dir: Path
    dbt_target_dir: Path
    tracking_plan: Path
    pubsub_project: str
    events_topic: str
    subscription: str
    changes_topic: str
    # The live state's PostgreSQL (libpq DSN); when set, the stream keeps it there, and the
    # dbt models and the events' history are kept in a DuckLake cataloged in it.
    postgres_dsn: str | None = None
    # Where that DuckLake keeps its Parquet files: a folder, or `gs://bucket/prefix/`.
    lake_data_path: str = ""

    @property
    def manifest_path(self) -> Path:
        return self.dbt_target_dir / "manifest.json"


def load_settings() -> Settings:
    warehouse = Path(
        os.environ.get("SEGOPS_WAREHOUSE", PROJECT_ROOT / "data" / "warehouse.duckdb")
    ).resolve()
    dbt_project_dir = Path(os.environ.get("SEGOPS_DBT_PROJECT_DIR", DBT_PROJECT_DIR)).resolve()
    return Settings(
        warehouse=warehouse,
        dbt_project_dir=dbt_project_dir,
        dbt_target_dir=Path(
            os.environ.get("SEGOPS_DBT_TARGET_DIR", dbt_project_dir / "target")
        ).resolve(),
        tracking_plan=Path(
            os.environ.get("SEGOPS_TRACKING_PLAN", PROJECT_ROOT / "tracking_plan.yml")
        ).resolve(),
        pubsub_project=os.environ.get("SEGOPS_PROJECT", "segops-local"),
        events_topic=os.environ.get("SEGOPS_EVENTS_TOPIC", "events"),
        subscription=os.environ.get("SEGOPS_SUBSCRIPTION", "segops-stream"),
        changes_topic=os.environ.get("SEGOPS_CHANGES_TOPIC", "segment-changes"),
        postgres_dsn=os.environ.get("SEGOPS_POSTGRES_DSN") or None,
        lake_data_path=os.environ.get("SEGOPS_LAKE_DATA_PATH") or f"{warehouse.parent / 'lake'}/",
    )
