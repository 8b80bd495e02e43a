"""Run dbt in-process against the configured warehouse and surface its errors readably."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from dbt.cli.main import dbtRunner, dbtRunnerResult

from segops.errors import SegOpsError
from segops.settings import Settings


class DbtError(SegOpsError):
    """dbt failed; the message carries dbt's own words (model, file and line)."""


def project_args(settings: Settings) -> list[str]:
    return [
        "--project-dir", str(settings.dbt_project_dir),
        "--profiles-dir", str(settings.dbt_project_dir),
        "--target-path", str(settings.dbt_target_dir),
    ]


def run_dbt(
    settings: Settings, command: list[str], dbt_vars: Mapping[str, Any] | None = None
) -> dbtRunnerResult:
    """Invoke `dbt <command>`; raise DbtError naming what failed if dbt did not succeed."""
    args = [*command, *project_args(settings), "--quiet", "--log-path",
            str(settings.dbt_target_dir / "logs")]
    if dbt_vars:
        args += ["--vars", json.dumps(dict(dbt_vars))]
    os.environ.setdefault("SEGOPS_WAREHOUSE", str(settings.warehouse))
    result = dbtRunner().invoke(args)
    if not result.success:
        raise DbtError(describe_failure(command, result))
    return result


def describe_failure(command: list[str], result: dbtRunnerResult) -> str:
    if result.exception is not None:
        return f"dbt {' '.join(command)} failed: {result.exception}"
    failures = [
        f"{r.node.name}: {r.message}"
        for r in (result.result or [])
        if getattr(r, "status", None) in ("error", "fail")
    ]
    return f"dbt {' '.join(command)} failed:\n  " + "\n  ".join(failures or ["unknown error"])
