"""The shipped dbt project with extra segments, compiled, for tests of what a segment may do;
and the project committed in a Git repository, for tests of `segops diff`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from segops.dbt import compile_segments
from segops.settings import DBT_PROJECT_DIR, Settings, load_settings


def realtime_yml(name: str, extra_meta: str = "") -> str:
    return (f"models:\n  - name: {name}\n    config:\n      materialized: view\n"
            f"      meta:\n        segment:\n          refresh: realtime\n{extra_meta}")


def project_with_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          segments: dict[str, tuple[str, str]]) -> Settings:
    """A copy of the project plus `segments` (name -> (sql, yml)), compiled in memory, and
    settings that point at it."""
    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs"))
    for name, (sql, yml) in segments.items():
        (copy / "models" / "segments" / f"{name}.sql").write_text(sql)
        (copy / "models" / "segments" / f"{name}.yml").write_text(yml)
    monkeypatch.setenv("SEGOPS_DBT_PROJECT_DIR", str(copy))
    settings = load_settings()
    compile_segments(settings)
    return settings


def committed_project(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A copy of the project committed on `main` in a Git repository under `folder`, and
    settings that point at it."""
    shutil.copytree(DBT_PROJECT_DIR, folder / "dbt_project",
                    ignore=shutil.ignore_patterns("target", "logs"))
    for command in (["init", "-q", "-b", "main"], ["add", "."],
                    ["-c", "user.name=analyst", "-c", "user.email=a@example.com",
                     "commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=folder, check=True, capture_output=True)
    monkeypatch.setenv("SEGOPS_DBT_PROJECT_DIR", str(folder / "dbt_project"))
    return load_settings()
