"""Run a SegOps job now, from the command line, recorded in Dagster's instance when it has one."""

import os
from pathlib import Path

import dagster as dg

from orchestration.build import build_definitions
from segops.dbt import compile_segments
from segops.settings import Settings


def load_job(settings: Settings, job_name: str) -> dg.JobDefinition:
    """`job_name` from the project as it is on disk: dbt compiles the segments first, as a deploy
    would, so the manifest keeps the compiled SQL the stream and preview read."""
    compile_segments(settings)
    return build_definitions(settings).resolve_job_def(job_name)


def execute(job: dg.JobDefinition, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    """Execute `job` in this process; its run shows in the UI when DAGSTER_HOME is set."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        Path(home).mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.get() if home else dg.DagsterInstance.ephemeral()
    return job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)


def run_job(settings: Settings, job_name: str, run_config: dict | None = None):
    return execute(load_job(settings, job_name), run_config)
