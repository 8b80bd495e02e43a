"""Run dbt in-process against the lake (or the in-memory target that only compiles) and surface
its errors readably.

dbt is imported when first run, not with this module: its imports take over a second, and a
preview of a shipped segment (compiled SQL already in the manifest) never runs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from segops.errors import SegOpsError
from segops.settings import Settings

if TYPE_CHECKING:
    from dbt.cli.main import dbtRunnerResult
    from dbt.contracts.graph.manifest import Manifest
    from dbt_common.events.base_types import EventMsg

_LOG_PREFIX = re.compile(r"^(\x1b\[[0-9;]*m)*\d\d:\d\d:\d\d\s+")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class DbtError(SegOpsError):
    """dbt failed; the message carries dbt's own words (model, file and line)."""


def project_args(settings: Settings) -> list[str]:
    return [
        "--project-dir", str(settings.dbt_project_dir),
        "--profiles-dir", str(settings.dbt_project_dir),
        "--target-path", str(settings.dbt_target_dir),
    ]


def run_dbt(
    settings: Settings,
    command: list[str],
    dbt_vars: Mapping[str, Any] | None = None,
    *,
    extra: list[str] | None = None,
    manifest: Manifest | None = None,
) -> dbtRunnerResult:
    """Invoke `dbt <command>`; raise DbtError with dbt's own explanation if it failed. Given a
    parsed `manifest`, dbt skips parsing the project (a fraction of a second instead of
    seconds): for a process that runs dbt again and again."""
    args = [*command, *project_args(settings), "--quiet", "--log-path",
            str(settings.dbt_target_dir / "logs"), *(extra or [])]
    if dbt_vars:
        args += ["--vars", json.dumps(dict(dbt_vars))]
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        result = invoke(args, manifest=manifest)
    if not result.success:
        raise DbtError(describe_failure(command, result, output.getvalue()))
    return result


# The profile's in-memory target: compiling opens neither the lake nor PostgreSQL.
COMPILE_TARGET = ["--target", "compile"]


def compile_segments(settings: Settings) -> dbtRunnerResult:
    """The manifest with every segment's compiled SQL (and what they read), compiled against an
    in-memory database, so it needs no server: what the stream and preview read."""
    return run_dbt(settings, ["compile", "--select", "+path:models/segments"],
                   extra=COMPILE_TARGET)


def invoke(args: list[str], callbacks: list[Callable[[EventMsg], None]] | None = None,
           manifest: Manifest | None = None) -> dbtRunnerResult:
    """dbt in this process, letting go of its database afterwards: dbt-duckdb keeps it (and the
    lake's catalog connection to PostgreSQL) open until this process exits; its own
    `close_all_connections` only drops the environment, which closes them whenever the garbage
    collector gets to it. So the environment is closed here, with every cursor dbt took."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    from dbt.cli.main import dbtRunner

    try:
        return dbtRunner(manifest=manifest, callbacks=callbacks).invoke(args)
    finally:
        with DuckDBConnectionManager._LOCK:
            environment, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
        if environment is not None:
            environment.close()


def describe_failure(command: list[str], result: dbtRunnerResult, output: str) -> str:
    said = [
        _ANSI.sub("", _LOG_PREFIX.sub("", line)).rstrip()
        for line in output.splitlines()
        if line.strip()
    ]
    failures = [
        f"{r.node.name}: {r.message}"
        for r in (getattr(result.result, "results", None) or [])
        if getattr(r, "status", None) in ("error", "fail")
    ]
    details = failures or said or [str(result.exception or "unknown error")]
    return f"dbt {command[0]} failed:\n  " + "\n  ".join(details)
