"""Settings from environment variables, with embedded defaults that work on a fresh clone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
# The project's own PostgreSQL (`make demo` and `make up` start it): its folder, and the user
# and database the live state lives in there.
OWN_POSTGRES = PROJECT_ROOT / "data" / "postgres"
POSTGRES_USER = "segops"
OWN_DATABASE = "segops"


@dataclass(frozen=True)
class Settings:
    dbt_project_dir: Path
    dbt_target_dir: Path
    tracking_plan: Path
    pubsub_project: str
    events_topic: str
    subscription: str
    changes_topic: str
    # The live state's PostgreSQL (libpq DSN), where the DuckLake of the models and the events'
    # history is cataloged too; None when neither named nor running (see live_connection).
    postgres_dsn: str | None = None
    # Where that DuckLake keeps its Parquet files: a folder, or `gs://bucket/prefix/`.
    lake_data_path: str = ""

    @property
    def manifest_path(self) -> Path:
        return self.dbt_target_dir / "manifest.json"


def load_settings() -> Settings:
    dbt_project_dir = Path(os.environ.get("SEGOPS_DBT_PROJECT_DIR", DBT_PROJECT_DIR)).resolve()
    return Settings(
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
        # set but empty: none (what the tests start from); unset: the project's own server
        postgres_dsn=(os.environ["SEGOPS_POSTGRES_DSN"] or None
                      if "SEGOPS_POSTGRES_DSN" in os.environ else own_postgres_dsn()),
        lake_data_path=os.environ.get("SEGOPS_LAKE_DATA_PATH")
        or f"{PROJECT_ROOT / 'data' / 'lake'}/",
    )


def own_postgres_dsn() -> str | None:
    """The project's own server's database while that server runs, found by the port in its
    postmaster.pid, so every command on this machine reaches what `make up` started without
    setting anything."""
    try:
        port = (OWN_POSTGRES / "data" / "postmaster.pid").read_text().splitlines()[3]
    except (OSError, IndexError):
        return None
    return f"host=127.0.0.1 port={port.strip()} user={POSTGRES_USER} dbname={OWN_DATABASE}"
